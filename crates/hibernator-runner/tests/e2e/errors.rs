use anyhow::Result;
use serde_json::json;

use crate::common::*;

fn one_error_line(ran: &Ran) -> String {
    let lines: Vec<&str> = ran.stdout.lines().collect();
    let errors = ran.error_lines();
    assert_eq!(errors.len(), 1, "exactly one error line: {}", ran.stdout);
    assert_eq!(
        lines.len(),
        1,
        "a configuration error is the only line: {}",
        ran.stdout
    );
    assert_eq!(
        ran.termination,
        format!("failed: {}", &errors[0]["error: ".len()..])
    );
    errors[0].to_string()
}

#[tokio::test]
async fn configuration_errors_are_one_line_naming_the_problem() -> Result<()> {
    let h = Harness::start().await?;
    type Change = Box<dyn Fn(Runner) -> Runner>;
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "missing accountId",
            Box::new(|r| {
                r.env(
                    "HIBERNATOR_CONNECTOR",
                    r#"{"kind":"aws","region":"us-east-1","credentials":"static"}"#,
                )
            }),
            "error: failed to read HIBERNATOR_CONNECTOR as JSON: missing field `accountId`",
        ),
        (
            "bad accountId",
            Box::new(|r| {
                r.env("HIBERNATOR_CONNECTOR", r#"{"kind":"aws","accountId":"12-34","region":"us-east-1","credentials":"static"}"#)
            }),
            "error: connector setting accountId = \"12-34\" is not valid: expected a 12-digit AWS account id",
        ),
        (
            "bad region",
            Box::new(|r| {
                r.env("HIBERNATOR_CONNECTOR", r#"{"kind":"aws","accountId":"123456789012","region":"mars","credentials":"static"}"#)
            }),
            "error: connector setting region = \"mars\" is not valid",
        ),
        (
            "no connector",
            Box::new(|r| r.unset("HIBERNATOR_CONNECTOR")),
            "error: HIBERNATOR_CONNECTOR is not set",
        ),
        (
            "unknown parameter",
            Box::new(|r| r.param(json!({"snapshotBeforeStop": true, "snapshotsKept": 7}))),
            "error: failed to read HIBERNATOR_PARAMETERS: parameters of a rds target: unknown field `snapshotsKept`",
        ),
        (
            "wrong operation",
            Box::new(|r| r.env("HIBERNATOR_OPERATION", "shutdown")),
            "error: HIBERNATOR_OPERATION = \"shutdown\" is not valid: expected hibernate, wakeUp or enforce",
        ),
        (
            "eks without a cluster name",
            Box::new(|r| {
                r.env("HIBERNATOR_TARGET_TYPE", "eks")
                    .param(json!({"clusterName": "dev"}))
            }),
            "error: connector setting eksClusterName is missing (needed by eks targets)",
        ),
        (
            "missing token",
            Box::new(|r| r.env("HIBERNATOR_TOKEN_PATH", "/nonexistent/token")),
            "error: failed to read the controller token from /nonexistent/token: No such file or directory",
        ),
    ];
    create_db(&h, "app-db", &[]).await?;
    for (case, change, expected) in cases {
        let ran = change(h.runner("rds", "app-db", "hibernate")).run().await?;
        let expected_code = if case == "missing token" { 1 } else { 2 };
        assert_eq!(ran.code, Some(expected_code), "{case}: {ran:#?}");
        if case == "missing token" {
            assert_eq!(ran.error_lines().len(), 1, "{case}: {}", ran.stdout);
            assert!(
                ran.error_lines()[0].starts_with(expected),
                "{case}: {}",
                ran.stdout
            );
        } else {
            let line = one_error_line(&ran);
            assert!(line.starts_with(expected), "{case}: {line}");
        }
    }
    assert_eq!(db_status(&h, "app-db").await?, "available");
    assert!(h.controller.records().is_empty());
    Ok(())
}

#[tokio::test]
async fn bad_credentials_missing_keys_and_a_wrong_account_are_refused() -> Result<()> {
    let h = Harness::with_moto(moto_server::MotoServer::builder().require_auth()).await?;
    let ran = h
        .runner("rds", "app-db", "hibernate")
        .run()
        .await?
        .failed(1);
    assert_eq!(ran.error_lines().len(), 1, "{}", ran.stdout);
    assert!(
        ran.error_lines()[0].starts_with(
            "error: failed to verify the AWS credentials with STS GetCallerIdentity: InvalidClientTokenId"
        ),
        "{}",
        ran.stdout
    );

    let ran = h
        .runner("rds", "app-db", "hibernate")
        .unset("AWS_SECRET_ACCESS_KEY")
        .run()
        .await?
        .failed(1);
    assert_eq!(
        ran.error_lines(),
        vec![
            "error: connector setting credentials = \"static\" needs AWS_SECRET_ACCESS_KEY in the environment, but it is not set"
        ]
    );

    let other = Harness::start().await?;
    create_db(&other, "app-db", &[]).await?;
    let mut connector = aws_connector();
    connector["accountId"] = json!("111111111111");
    let ran = other
        .runner("rds", "app-db", "hibernate")
        .env("HIBERNATOR_CONNECTOR", &connector.to_string())
        .run()
        .await?
        .failed(1);
    assert_eq!(
        ran.error_lines(),
        vec![
            "error: the AWS credentials belong to account 123456789012, not to the connector's accountId 111111111111; refusing to act"
        ]
    );
    assert_eq!(db_status(&other, "app-db").await?, "available");

    // An assumed role in another account is checked the same way.
    let mut connector = aws_connector();
    connector["assumeRoleArn"] = json!("arn:aws:iam::210987654321:role/hibernator");
    let ran = other
        .runner("rds", "app-db", "hibernate")
        .env("HIBERNATOR_CONNECTOR", &connector.to_string())
        .run()
        .await?
        .failed(1);
    assert!(
        ran.error_lines()[0].contains("belong to account 210987654321"),
        "{}",
        ran.stdout
    );
    connector["accountId"] = json!("210987654321");
    let ran = other
        .runner("rds", "missing-db", "hibernate")
        .env("HIBERNATOR_CONNECTOR", &connector.to_string())
        .run()
        .await?
        .ok();
    assert!(ran.has("AWS account 210987654321 verified as arn:aws:sts::210987654321:assumed-role/hibernator/hibernator-plan-missing-db-hibernate-"), "{}", ran.stdout);
    assert!(other.controller.records().is_empty());
    Ok(())
}

#[tokio::test]
async fn secrets_are_never_printed() -> Result<()> {
    let h = Harness::start().await?;
    create_db(&h, "app-db", &[]).await?;
    let bad_auth = Harness::with_moto(moto_server::MotoServer::builder().require_auth()).await?;
    let mut outputs = Vec::new();
    for json_format in [false, true] {
        let format = if json_format { "json" } else { "text" };
        for operation in ["hibernate", "wakeUp"] {
            let ran = h
                .runner("rds", "app-db", operation)
                .env("HIBERNATOR_LOG_FORMAT", format)
                .param(json!({"snapshotBeforeStop": true}))
                .run()
                .await?
                .ok();
            outputs.push(ran);
        }
        outputs.push(
            bad_auth
                .runner("rds", "app-db", "hibernate")
                .env("HIBERNATOR_LOG_FORMAT", format)
                .run()
                .await?
                .failed(1),
        );
        let mut connector = aws_connector();
        connector["accountId"] = json!("111111111111");
        outputs.push(
            h.runner("rds", "app-db", "hibernate")
                .env("HIBERNATOR_LOG_FORMAT", format)
                .env("HIBERNATOR_CONNECTOR", &connector.to_string())
                .run()
                .await?
                .failed(1),
        );
    }
    // --help shows the environment variables but not their values.
    let help = h
        .runner("rds", "app-db", "hibernate")
        .env("HIBERNATOR_PARAMETERS", TOKEN);
    let help = tokio::process::Command::new(env!("CARGO_BIN_EXE_hibernator-runner"))
        .arg("--help")
        .env_clear()
        .envs(&help.env)
        .output()
        .await?;
    assert!(help.status.success());
    let help_text = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(help_text.contains("HIBERNATOR_CONTROLLER_ENDPOINT"));

    let streamed: Vec<String> = [&h.controller, &bad_auth.controller]
        .iter()
        .flat_map(|c| c.observed().logs)
        .map(|l| format!("{} {}", l.message, l.fields_json))
        .collect();
    let completions: Vec<String> = h
        .controller
        .observed()
        .completions
        .iter()
        .map(|c| format!("{} {}", c.summary, c.error))
        .collect();
    let mut everything = vec![help_text];
    everything.extend(streamed);
    everything.extend(completions);
    for ran in &outputs {
        everything.push(ran.stdout.clone());
        everything.push(ran.stderr.clone());
        everything.push(ran.termination.clone());
    }
    assert!(
        everything
            .iter()
            .any(|t| t.contains("AWS account 123456789012 verified"))
    );
    for secret in [TOKEN, ACCESS_KEY, SECRET_KEY] {
        for text in &everything {
            assert!(!text.contains(secret), "{secret} printed in: {text}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_binary_starts_and_explains_itself() -> Result<()> {
    for arg in ["--help", "--version"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hibernator-runner"))
            .arg(arg)
            .env_clear()
            .output()?;
        assert!(out.status.success(), "{arg}");
        let text = String::from_utf8_lossy(&out.stdout);
        let expected = match arg {
            "--version" => format!("hibernator-runner {}", env!("CARGO_PKG_VERSION")),
            _ => "HIBERNATOR_".to_string(),
        };
        assert!(text.contains(&expected), "{arg}: {text}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hibernator-runner"))
        .arg("--no-such-flag")
        .env_clear()
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    Ok(())
}

/// The SDK's HTTPS client is built even for an https endpoint nobody serves: one rustls crypto
/// provider (aws-lc-rs) is compiled in, so it starts, fails to connect, and says so in one line.
#[tokio::test]
async fn the_https_client_starts_and_reports_a_dead_endpoint_in_one_line() -> Result<()> {
    let h = Harness::start().await?;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let ran = h
        .runner("rds", "app-db", "hibernate")
        .env("AWS_ENDPOINT_URL", &format!("https://127.0.0.1:{port}"))
        .env("HIBERNATOR_AWS_MAX_ATTEMPTS", "1")
        .run()
        .await?
        .failed(1);
    assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    assert_eq!(ran.error_lines().len(), 1, "{}", ran.stdout);
    assert!(
        ran.error_lines()[0].starts_with(
            "error: failed to verify the AWS credentials with STS GetCallerIdentity: "
        ),
        "{}",
        ran.stdout
    );
    Ok(())
}
