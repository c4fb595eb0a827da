//! A pod's projected service-account token is a real, pod-bound token: TokenReview accepts it
//! with the pod's name and uid in `extra`, and rejects it once the pod is gone.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::common::{SHELL, cluster, create_and_wait, eventually, logs, object};

async fn review(client: &Client, token: &str, audience: &str) -> anyhow::Result<TokenReviewStatus> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            audiences: Some(vec![audience.to_string()]),
        },
        ..TokenReview::default()
    };
    let answer = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(answer.status.unwrap_or_default())
}

#[tokio::test]
async fn a_projected_token_passes_token_review_until_its_pod_is_deleted() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("tokens").await?;
    let client = cluster.client()?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = object(json!({
        "metadata": {"name": "runner"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "runner",
                "image": SHELL,
                "command": ["sh", "-c", "cat /var/run/secrets/hibernator/token; echo; exec sleep 3600"],
                "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets/hibernator", "readOnly": true}],
            }],
            "volumes": [{"name": "token", "projected": {"sources": [{"serviceAccountToken": {
                "audience": "hibernator", "expirationSeconds": 600, "path": "token",
            }}]}}],
        }
    }));
    let running = create_and_wait(&pods, &pod, &["Running"]).await?;
    let uid = running.uid().unwrap_or_default();
    let token = eventually("the token in the logs", Duration::from_secs(30), || async {
        let text = logs(&pods, "runner").await?;
        Ok(text
            .lines()
            .next()
            .filter(|l| l.len() > 100)
            .map(String::from))
    })
    .await?;

    let status = review(&client, &token, "hibernator").await?;
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    let user = status.user.clone().unwrap_or_default();
    assert_eq!(
        user.username.as_deref(),
        Some(format!("system:serviceaccount:{ns}:default").as_str())
    );
    let extra = user.extra.unwrap_or_default();
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["runner".to_string()])
    );
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-uid"),
        Some(&vec![uid])
    );
    assert_eq!(
        extra.get("authentication.kubernetes.io/node-name"),
        Some(&vec!["kube-testbed".to_string()])
    );
    assert_eq!(status.audiences, Some(vec!["hibernator".to_string()]));

    // Another audience is not accepted.
    let status = review(&client, &token, "someone-else").await?;
    assert_ne!(status.authenticated, Some(true));

    // Once the pod is gone, the token it was bound to is worthless.
    pods.delete("runner", &DeleteParams::default()).await?;
    eventually("the pod to be gone", Duration::from_secs(30), || async {
        Ok(pods.get_opt("runner").await?.is_none().then_some(()))
    })
    .await?;
    // The API server caches successful token authentications for 10 s.
    let status = eventually(
        "the token to be rejected",
        Duration::from_secs(30),
        || async {
            let status = review(&client, &token, "hibernator").await?;
            Ok((status.authenticated != Some(true)).then_some(status))
        },
    )
    .await?;
    let error = status.error.unwrap_or_default();
    assert!(error.contains("invalidated"), "{error}");
    Ok(())
}
