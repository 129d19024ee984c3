//! The connection storm: thousands of idle, half-sent requests held open against the
//! listener, as a slowloris client leaves them. Measures how long `/readyz` takes to answer
//! meanwhile, and the service's resident memory before, during and after: whether the
//! allocator gives back what the storm took.

use std::path::Path;
use std::time::{Duration, Instant};

use hookrelay_tests::{amqp_url, unique_namespace, TestDb};
use serde::Serialize;
use tokio::io::AsyncWriteExt as _;

#[derive(Serialize)]
pub struct StormFigures {
    pub max_connections: usize,
    pub idle_connections: usize,
    pub readyz_max_ms: f64,
    pub rss_before_mb: f64,
    pub rss_during_mb: f64,
    /// Ten seconds after the storm's sockets closed.
    pub rss_after_mb: f64,
}

/// The service's resident memory now, in MiB.
fn rss_mb(pid: u32) -> f64 {
    crate::process::memory_mb(pid, "VmRSS:")
}

pub async fn run(
    binary: &Path,
    max_connections: usize,
    idle: usize,
) -> anyhow::Result<StormFigures> {
    // Every client socket is a descriptor of this process too.
    rlimit::increase_nofile_limit(u64::MAX)?;
    let db = TestDb::new();
    let namespace = unique_namespace();
    let mut env = hookrelay_tests::service_env(&db, &namespace, crate::TOKEN);
    env.push(("HOOKRELAY_MAX_CONNECTIONS", max_connections.to_string()));
    env.push(("HOOKRELAY_MAX_IN_FLIGHT_TOTAL", "256".to_owned()));
    env.push(("HOOKRELAY_HEADER_READ_TIMEOUT", "5m".to_owned()));
    let mut service = hookrelay_tests::spawn_service(binary, &env)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let pid = service.child.id().unwrap_or(0);
    let address = format!("127.0.0.1:{}", service.port);
    let result = async {
        let readyz = format!("http://{address}/readyz");
        // Warm up: the first requests allocate what the service keeps anyway.
        for _ in 0..20 {
            reqwest::get(&readyz).await?;
        }
        let rss_before_mb = rss_mb(pid);
        let mut storm = Vec::with_capacity(idle);
        for _ in 0..idle {
            let mut socket = tokio::net::TcpStream::connect(&address).await?;
            socket
                .write_all(b"POST /v1/webhooks HTTP/1.1\r\nHost: x\r\nContent-")
                .await?;
            storm.push(socket);
        }
        let mut readyz_max = Duration::ZERO;
        for _ in 0..20 {
            let started = Instant::now();
            let answer = reqwest::Client::new().get(&readyz).send().await?;
            anyhow::ensure!(
                answer.status().is_success(),
                "/readyz answered {}",
                answer.status()
            );
            readyz_max = readyz_max.max(started.elapsed());
        }
        let rss_during_mb = rss_mb(pid);
        drop(storm);
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(StormFigures {
            max_connections,
            idle_connections: idle,
            readyz_max_ms: readyz_max.as_secs_f64() * 1000.0,
            rss_before_mb,
            rss_during_mb,
            rss_after_mb: rss_mb(pid),
        })
    }
    .await;
    let _ = service.child.start_kill();
    let _ = service.child.wait().await;
    hookrelay_tests::delete_namespace(&amqp_url(), &namespace, &[]).await;
    result
}
