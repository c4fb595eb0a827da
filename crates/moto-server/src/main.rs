//! `cargo run -p moto-server`: installs moto if needed, starts it on 127.0.0.1 and prints its
//! endpoint; Ctrl-C stops it.

fn main() -> anyhow::Result<()> {
    let server = moto_server::MotoServer::start()?;
    println!(
        "moto {} listening on {} (account {}); Ctrl-C stops it",
        moto_server::MOTO_VERSION,
        server.endpoint(),
        moto_server::ACCOUNT_ID
    );
    println!("export AWS_ENDPOINT_URL={}", server.endpoint());
    let status = server.wait()?;
    anyhow::bail!("moto_server exited with {status}")
}
