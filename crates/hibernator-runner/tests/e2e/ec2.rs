use anyhow::Result;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn tagged_instances_stop_and_start_and_managed_ones_are_left_alone() -> Result<()> {
    let h = Harness::start().await?;
    let running = run_instances(&h, 2, &[("env", "dev")]).await?;
    let stopped = run_instances(&h, 1, &[("env", "dev")]).await?;
    stop_instance(&h, &stopped[0]).await?;
    let karpenter = run_instances(
        &h,
        1,
        &[("env", "dev"), ("karpenter.sh/nodepool", "default")],
    )
    .await?;
    let other = run_instances(&h, 1, &[("env", "prod")]).await?;
    // An auto-scaling group whose instances carry env=dev (and aws:autoscaling:groupName).
    create_asg(&h, "dev-asg", (1, 1, 2), &[("env", "dev")]).await?;
    let params = json!({"selector": {"tags": {"env": "dev"}}});

    let ran = h
        .runner("ec2", "dev-vms", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        ran.has(&format!(
            "EC2 instance {} belongs to Karpenter NodePool default; skipped",
            karpenter[0]
        )),
        "{}",
        ran.stdout
    );
    assert!(
        ran.has("belongs to auto-scaling group dev-asg; skipped"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.termination
            .starts_with("stopped 2 of 3 EC2 instances (1 already stopped) in "),
        "{}",
        ran.termination
    );
    for id in &running {
        assert_eq!(instance_state(&h, id).await?, "stopped");
    }
    assert_eq!(instance_state(&h, &karpenter[0]).await?, "running");
    assert_eq!(instance_state(&h, &other[0]).await?, "running");
    assert_eq!(asg_sizes(&h, "dev-asg").await?, (1, 1, 2, 1));
    let recorded = records(&h.controller);
    assert_eq!(recorded.len(), 3);
    assert_eq!(
        recorded[&format!("ec2:{}", stopped[0])],
        json!({"status": "stopped", "wasRunning": false})
    );
    assert_eq!(
        recorded[&format!("ec2:{}", running[0])],
        json!({"status": "running", "wasRunning": true})
    );

    let again = h
        .runner("ec2", "dev-vms", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        again
            .termination
            .starts_with("stopped 0 of 3 EC2 instances (3 already stopped)"),
        "{}",
        again.termination
    );
    assert_eq!(records(&h.controller), recorded);

    h.runner("ec2", "dev-vms", "wakeUp")
        .param(params)
        .run()
        .await?
        .ok();
    for id in &running {
        assert_eq!(instance_state(&h, id).await?, "running");
    }
    assert_eq!(instance_state(&h, &stopped[0]).await?, "stopped");
    Ok(())
}

#[tokio::test]
async fn listed_instances_and_a_missing_one() -> Result<()> {
    let h = Harness::start().await?;
    let ids = run_instances(&h, 1, &[]).await?;
    let params = json!({"selector": {"instanceIds": [ids[0], "i-0123456789abcdef0"]}});
    let ran = h
        .runner("ec2", "vm", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        ran.has("warning: EC2 instance i-0123456789abcdef0 does not exist; skipped"),
        "{}",
        ran.stdout
    );
    assert_eq!(instance_state(&h, &ids[0]).await?, "stopped");
    // The instance is terminated while asleep: wake-up skips it with a message.
    h.ec2()
        .terminate_instances()
        .instance_ids(&ids[0])
        .send()
        .await?;
    let woke = h
        .runner("ec2", "vm", "wakeUp")
        .param(params)
        .run()
        .await?
        .ok();
    // Not found is reported, not skipped silently: the controller keeps the record and the
    // plan says Restored=False (ResourceNotFound). The run itself succeeds (a retry cannot
    // bring a deleted instance back).
    assert!(
        woke.has(&format!(
            "warning: ec2:{0} not restored: EC2 instance {0} does not exist where this runner looked",
            ids[0]
        )),
        "{}",
        woke.stdout
    );
    assert_eq!(
        last_results(&h),
        [(
            format!("ec2:{}", ids[0]),
            hibernator_proto::v1::resource_result::Result::NotFound as i32
        )]
    );
    Ok(())
}
