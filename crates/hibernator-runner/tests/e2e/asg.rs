use anyhow::Result;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn groups_scale_to_zero_and_back_to_their_exact_sizes() -> Result<()> {
    let h = Harness::start().await?;
    create_asg(&h, "web", (1, 2, 4), &[]).await?;
    create_asg(&h, "idle", (0, 0, 1), &[]).await?;
    let params = json!({"selector": {"names": ["web", "idle", "ghost"]}});

    let ran = h
        .runner("asg", "groups", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        ran.has("recorded web: was min 1, desired 2, max 4"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.has("warning: auto-scaling group ghost does not exist; skipped"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.termination.starts_with(
            "scaled to zero 1 of 3 auto-scaling groups (1 already at zero, 1 no longer there) in "
        ),
        "{}",
        ran.termination
    );
    assert_eq!(asg_sizes(&h, "web").await?, (0, 0, 4, 0));
    assert_eq!(asg_sizes(&h, "idle").await?, (0, 0, 1, 0));
    let recorded = records(&h.controller);
    assert_eq!(
        recorded["asg:web"],
        json!({"minSize": 1, "desiredSize": 2, "maxSize": 4})
    );

    h.runner("asg", "groups", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert_eq!(records(&h.controller), recorded);

    let woke = h
        .runner("asg", "groups", "wakeUp")
        .param(params)
        .run()
        .await?
        .ok();
    assert!(
        woke.has("web restored: min 1, desired 2, max 4"),
        "{}",
        woke.stdout
    );
    assert_eq!(asg_sizes(&h, "web").await?, (1, 2, 4, 2));
    assert_eq!(asg_sizes(&h, "idle").await?, (0, 0, 1, 0));
    Ok(())
}

#[tokio::test]
async fn tags_select_groups() -> Result<()> {
    let h = Harness::start().await?;
    create_asg(&h, "dev-web", (2, 2, 2), &[("env", "dev")]).await?;
    create_asg(&h, "prod-web", (2, 2, 2), &[("env", "prod")]).await?;
    let params = json!({"selector": {"tags": {"env": "dev"}}});
    h.runner("asg", "groups", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert_eq!(asg_sizes(&h, "dev-web").await?, (0, 0, 2, 0));
    assert_eq!(asg_sizes(&h, "prod-web").await?, (2, 2, 2, 2));
    h.runner("asg", "groups", "wakeUp")
        .param(params)
        .run()
        .await?
        .ok();
    assert_eq!(asg_sizes(&h, "dev-web").await?, (2, 2, 2, 2));
    Ok(())
}
