//! A PostgreSQL server of a test's own, on a port of its own, for tests that restart the
//! database: the shared server on 5432 is never touched. Stopped and removed on drop.
//!
//! It runs the machine's `initdb` and `pg_ctl` (Debian's `/usr/lib/postgresql/<version>`) as
//! the `postgres` user, with trust authentication on 127.0.0.1 only.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct TestPostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

fn postgres_bin() -> PathBuf {
    let base = PathBuf::from("/usr/lib/postgresql");
    let mut versions: Vec<u32> = std::fs::read_dir(&base)
        .expect("PostgreSQL is installed under /usr/lib/postgresql")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    let newest = versions.last().expect("a PostgreSQL version");
    base.join(newest.to_string()).join("bin")
}

impl TestPostgres {
    /// A folder of its own, owned by `postgres`, and a free port; nothing in them yet.
    fn unstarted() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("hookrelay-pg-{id}"));
        std::fs::create_dir_all(&dir).expect("a folder for the cluster");
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status();
        Self {
            port: crate::broker::free_port(),
            dir,
            bin: postgres_bin(),
        }
    }

    /// Creates a cluster and starts it; waits until it takes connections.
    pub async fn start() -> Self {
        let node = Self::unstarted();
        let status = node
            .as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(node.dir.join("data"))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed");
        node.boot().await;
        node
    }

    /// A hot standby of `primary`, streaming from it (`pg_basebackup -R`), on a port of its
    /// own; waits until it takes (read-only) connections.
    pub async fn replica_of(primary: &TestPostgres) -> Self {
        let node = Self::unstarted();
        let status = node
            .as_postgres("pg_basebackup")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "-p",
            ])
            .arg(primary.port.to_string())
            .arg("-D")
            .arg(node.dir.join("data"))
            .status()
            .expect("pg_basebackup runs");
        assert!(status.success(), "pg_basebackup failed");
        node.boot().await;
        node
    }

    /// Stops the server at once, for good.
    pub fn kill(&self) {
        self.stop("immediate");
    }

    /// The URL of the server, without a database name.
    pub fn server_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    fn as_postgres(&self, program: &str) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program));
        command
    }

    async fn boot(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let status = self
            .as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-o", &options, "-l"])
            .arg(self.dir.join("log"))
            .args(["-w", "start"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(
            status.success(),
            "pg_ctl start failed; see {}",
            self.dir.join("log").display()
        );
        let started = Instant::now();
        let url = format!("{}/postgres", self.server_url());
        while tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the test database did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server the hard way (every connection drops, as in a crash), then starts
    /// it again with its data.
    pub async fn restart(&self) {
        self.stop("immediate");
        self.boot().await;
    }

    fn stop(&self, mode: &str) {
        let _ = self
            .as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", mode, "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
