//! A small in-cluster program for the end-to-end tests: with `Config::incluster()` (token, CA
//! and namespace files under /var/run/secrets/kubernetes.io/serviceaccount/ and
//! KUBERNETES_SERVICE_HOST/PORT) it lists the pods of its namespace and prints their names.

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, Config};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    kube_testbed::install_crypto_provider();
    let config = Config::incluster()?;
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config)?;
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let list = pods.list(&ListParams::default()).await?;
    println!("namespace {namespace}: {} pods", list.items.len());
    for pod in list.items {
        println!("pod {}", pod.metadata.name.unwrap_or_default());
    }
    Ok(())
}
