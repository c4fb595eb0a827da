//! moto must not outlive the process that started it, even one killed with SIGKILL.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn moto_ends_when_its_parent_is_killed() {
    let mut parent = Command::new(env!("CARGO_BIN_EXE_moto-server"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the moto-server binary starts");
    let mut first = String::new();
    BufReader::new(parent.stdout.take().expect("piped"))
        .read_line(&mut first)
        .expect("a line");
    let port: u16 = first
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the endpoint is printed: {first}"));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    parent.kill().expect("kill");
    parent.wait().expect("reaped");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "moto outlived its parent");
        std::thread::sleep(Duration::from_millis(100));
    }
}
