//! A Git server on 127.0.0.1 over smart HTTP, and a working copy that commits and pushes to it.
//!
//! The server is Git's own `git http-backend`, run as a CGI program for each request behind a
//! small hyper server. The CGI glue is written here because it is a few dozen lines (environment
//! in, headers and body out) and no maintained crate serves CGI from hyper; everything Git
//! speaks is Git's. Flux's source-controller (go-git) and the `git` CLI both fetch and push over
//! it, so the tests see the protocol a hosted Git server speaks, without TLS or accounts.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::process::Command;

/// A running Git server; stopped when dropped.
pub struct GitServer {
    root: PathBuf,
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GitServer {
    /// Serves the bare repositories under `root` on a free port of 127.0.0.1.
    pub async fn start(root: &Path) -> Result<GitServer> {
        std::fs::create_dir_all(root)?;
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let base = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let served = root.to_path_buf();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let root = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let root = root.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(cgi(&root, req).await.unwrap_or_else(
                                |e| {
                                    Response::builder()
                                        .status(StatusCode::INTERNAL_SERVER_ERROR)
                                        .body(Full::new(Bytes::from(format!("{e:#}"))))
                                        .expect("a response")
                                },
                            ))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Ok(GitServer {
            root: root.to_path_buf(),
            base,
            task,
        })
    }

    /// The clone URL of repository `name` (`http://127.0.0.1:PORT/<name>.git`).
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}.git", self.base)
    }

    /// Creates the empty bare repository `name` (default branch `main`).
    pub async fn create(&self, name: &str) -> Result<()> {
        let dir = self.root.join(format!("{name}.git"));
        git(
            &self.root,
            &[
                "init",
                "--quiet",
                "--bare",
                "--initial-branch=main",
                dir.to_str().context("a UTF-8 path")?,
            ],
        )
        .await?;
        git(&dir, &["config", "http.receivepack", "true"]).await?;
        Ok(())
    }
}

/// One request, answered by `git http-backend` (RFC 3875 environment; the response's CGI
/// headers become HTTP headers, `Status` the status).
async fn cgi(root: &Path, req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut child = Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("failed to run git http-backend")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let out = child.wait_with_output().await?;
    let _ = writer.await;
    let text = &out.stdout;
    let split = text
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| text.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, sep)) = split else {
        bail!(
            "git http-backend gave no headers: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut response = Response::builder();
    for line in String::from_utf8_lossy(&text[..end]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().unwrap_or("500").parse::<u16>()?;
            response = response.status(code);
        } else {
            response = response.header(name.trim(), value);
        }
    }
    Ok(response.body(Full::new(Bytes::copy_from_slice(&text[end + sep..])))?)
}

/// Runs `git` in `dir` with a fixed identity; returns stdout.
async fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Platform Team",
            "-c",
            "user.email=platform@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .await
        .context("failed to run git")?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A working copy of a repository on a [`GitServer`].
pub struct Checkout {
    dir: PathBuf,
}

impl Checkout {
    /// Clones `url` into `dir` (an empty repository is fine).
    pub async fn clone(url: &str, dir: &Path) -> Result<Checkout> {
        let parent = dir.parent().context("a parent directory")?;
        std::fs::create_dir_all(parent)?;
        git(
            parent,
            &[
                "clone",
                "--quiet",
                url,
                dir.to_str().context("a UTF-8 path")?,
            ],
        )
        .await?;
        git(dir, &["checkout", "--quiet", "-B", "main"]).await?;
        Ok(Checkout {
            dir: dir.to_path_buf(),
        })
    }

    /// The path of `file` in the working copy.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Commits everything in the working copy with `message` and pushes it; returns the new
    /// commit's hash.
    pub async fn commit_and_push(&self, message: &str) -> Result<String> {
        git(&self.dir, &["add", "--all"]).await?;
        git(&self.dir, &["commit", "--quiet", "-m", message]).await?;
        self.push().await
    }

    /// Replaces the one occurrence of `from` in `file` of the working copy (not committed).
    pub fn edit(&self, file: &str, from: &str, to: &str) -> Result<()> {
        let path = self.path(file);
        let text = std::fs::read_to_string(&path)?;
        let n = text.matches(from).count();
        if n != 1 {
            bail!("{from:?} occurs {n} times in {file}, not once");
        }
        std::fs::write(&path, text.replace(from, to))?;
        Ok(())
    }

    /// [`Checkout::edit`], committed with `message` and pushed; returns the new commit's hash.
    pub async fn commit_edit(
        &self,
        file: &str,
        from: &str,
        to: &str,
        message: &str,
    ) -> Result<String> {
        self.edit(file, from, to)?;
        self.commit_and_push(message).await
    }

    /// `git revert` of the last commit, pushed; returns the new commit's hash.
    pub async fn revert_last(&self) -> Result<String> {
        git(&self.dir, &["revert", "--no-edit", "HEAD"]).await?;
        self.push().await
    }

    async fn push(&self) -> Result<String> {
        git(&self.dir, &["push", "--quiet", "origin", "main"]).await?;
        Ok(git(&self.dir, &["rev-parse", "HEAD"])
            .await?
            .trim()
            .to_string())
    }
}

/// Copies the directory tree `from` into `to`.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The seed's repository (`hibernator/` as in `examples/gitops`) as repository `name` on `git`,
/// with a working copy in `work`; returns the working copy and the first commit.
pub async fn seed_repository(
    git: &GitServer,
    name: &str,
    work: &Path,
) -> Result<(Checkout, String)> {
    git.create(name).await?;
    let repo = Checkout::clone(&git.url(name), work).await?;
    copy_tree(
        &crate::root().join("examples/gitops/hibernator"),
        &repo.path("hibernator"),
    )?;
    let first = repo.commit_and_push("Hibernation plans").await?;
    Ok((repo, first))
}
