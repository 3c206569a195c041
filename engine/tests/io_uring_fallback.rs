//! When the kernel refuses io_uring (here: a seccomp filter on this one
//! process makes `io_uring_setup` fail with EPERM, as a container runtime's
//! default profile does), `--io-driver auto` falls back to epoll and says so,
//! and `--io-driver uring` refuses to start with an error that says why.
#![cfg(target_arch = "x86_64")]

mod common;
use common::*;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Installs a seccomp filter failing io_uring_setup(2) with EPERM. Runs in the
/// child between fork and exec: only async-signal-safe calls (prctl).
fn deny_io_uring() -> std::io::Result<()> {
    const NR_IO_URING_SETUP: u32 = 425;
    let filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: NR_IO_URING_SETUP,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: plain prctl calls with a filter that outlives them.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const _,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn spawn_without_io_uring(
    driver: &str,
) -> (
    std::process::Child,
    std::net::SocketAddr,
    std::path::PathBuf,
) {
    let port = free_port();
    let admin = local(free_port());
    let dir = scratch_dir("nouring");
    let cfg = dir.join("proxy.yaml");
    std::fs::write(
        &cfg,
        config_text(
            admin,
            &format!(
                r#"listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{}}
            direct_response: {{ status: 200, body: "fallback works" }}
"#
            ),
        ),
    )
    .unwrap();
    let log = dir.join("proxy.log");
    let f = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(proxy_bin());
    cmd.args(["--config"])
        .arg(&cfg)
        .args(["--workers", "1", "--io-driver", driver])
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f);
    // SAFETY: the closure only calls prctl (async-signal-safe).
    unsafe {
        cmd.pre_exec(deny_io_uring);
    }
    (cmd.spawn().unwrap(), local(port), log)
}

#[test]
fn auto_falls_back_to_epoll_when_io_uring_is_refused() {
    let (mut child, web, log) = spawn_without_io_uring("auto");
    let ok = wait_until(Duration::from_secs(10), || {
        Conn::try_connect(web)
            .is_ok_and(|mut c| c.request(&Req::get("/")).is_ok_and(|r| r.status == 200))
    });
    // Workers may answer before the main thread has logged the start line.
    wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("serving"))
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "the proxy should serve on epoll; log:\n{text}");
    assert!(text.contains("io_uring setup failed"), "{text}");
    assert!(text.contains("falling back to epoll"), "{text}");
    assert!(
        text.contains("[epoll]"),
        "the start line names the driver: {text}"
    );
}

#[test]
fn uring_only_refuses_to_start_and_says_why() {
    let (mut child, _web, log) = spawn_without_io_uring("uring");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the proxy should have exited");
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("io_uring setup failed"), "{text}");
    assert!(text.contains("Operation not permitted"), "{text}");
    assert!(
        text.contains("seccomp") || text.contains("io_uring_disabled"),
        "names the likely cause: {text}"
    );
}
