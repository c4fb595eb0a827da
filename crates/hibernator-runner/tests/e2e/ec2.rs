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

/// `hibernate: true` stops instances with hibernation enabled with `Hibernate=true` and the
/// others as usual, saying so; both wake up as usual.
#[tokio::test]
async fn hibernate_uses_ec2_hibernation_where_enabled_and_says_when_it_falls_back() -> Result<()> {
    use crate::slow_proxy::{Rule, SlowProxy};
    let h = Harness::start().await?;
    let image = image_id(&h).await?;
    let out = h
        .ec2()
        .run_instances()
        .image_id(image)
        .instance_type(aws_sdk_ec2::types::InstanceType::M5Large)
        .min_count(1)
        .max_count(1)
        .hibernation_options(
            aws_sdk_ec2::types::HibernationOptionsRequest::builder()
                .configured(true)
                .build(),
        )
        .send()
        .await?;
    let enabled = out.instances()[0].instance_id().unwrap().to_string();
    let plain = run_instances(&h, 1, &[]).await?.remove(0);
    // Counts the stop requests with Hibernate=true and all of them.
    let proxy = SlowProxy::start(
        h.moto.endpoint(),
        vec![
            // The EC2 query protocol answers StopInstances with an instancesSet.
            Rule::new(
                "Action=",
                "Hibernate=true",
                "instancesSet",
                "instancesSet",
                10,
            ),
            Rule::new(
                "Action=",
                "Action=StopInstances",
                "instancesSet",
                "instancesSet",
                10,
            ),
        ],
    )
    .await?;
    let params = json!({"hibernate": true, "selector": {"instanceIds": [enabled, plain]}});
    let ran = h
        .runner("ec2", "vms", "hibernate")
        .env("AWS_ENDPOINT_URL", &proxy.endpoint())
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        ran.has(&format!(
            "EC2 instance {enabled} has hibernation enabled: hibernating it (its memory is kept on the root volume)"
        )),
        "{}",
        ran.stdout
    );
    assert!(
        ran.has(&format!(
            "warning: EC2 instance {plain} does not have hibernation enabled (it is set at launch): stopping it as usual, its memory is not kept"
        )),
        "{}",
        ran.stdout
    );
    let hits: Vec<usize> = proxy.rules().iter().map(|r| r.hits).collect();
    assert_eq!(hits, [1, 2], "one hibernation, two stops: {}", ran.stdout);
    assert_eq!(instance_state(&h, &enabled).await?, "stopped");
    assert_eq!(instance_state(&h, &plain).await?, "stopped");
    h.runner("ec2", "vms", "wakeUp")
        .param(params)
        .run()
        .await?
        .ok();
    assert_eq!(instance_state(&h, &enabled).await?, "running");
    assert_eq!(instance_state(&h, &plain).await?, "running");
    Ok(())
}
