//! A RabbitMQ node of a test's own, on ports of its own, for tests that stop and restart the
//! broker: the shared node on 5672 is never touched. Stopped and removed on drop.
//!
//! It runs the machine's `rabbitmq-server` (as the `rabbitmq` user, through Debian's wrapper)
//! with its node name, ports, data and log folders, config and plugin files under a temporary
//! folder of its own.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct TestBroker {
    pub node: String,
    pub port: u16,
    dist_port: u16,
    dir: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl TestBroker {
    /// Starts a node and waits until it takes AMQP connections.
    pub async fn start() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("hookrelay-rabbit-{id}"));
        std::fs::create_dir_all(&dir).expect("a folder for the node");
        let port = free_port();
        let broker = Self {
            node: format!("hrtest{}@localhost", &id[..12]),
            port,
            dist_port: free_port(),
            dir,
        };
        std::fs::write(
            broker.dir.join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n"),
        )
        .expect("the node's config");
        std::fs::write(broker.dir.join("enabled_plugins"), "[].\n").expect("no plugins");
        // The server runs as the `rabbitmq` user, which must own its folders.
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&broker.dir)
            .status();
        broker.boot().await;
        broker
    }

    /// The AMQP URL of this node.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"));
        command
    }

    async fn boot(&self) {
        let _ = std::fs::remove_file(self.dir.join("pid"));
        let status = self
            .command("rabbitmq-server")
            .arg("-detached")
            .status()
            .expect("rabbitmq-server runs (Debian's rabbitmq-server package)");
        assert!(status.success(), "rabbitmq-server -detached failed");
        let started = Instant::now();
        loop {
            if let Ok(connection) = hookrelay_broker::connect(&self.url()).await {
                let _ = connection.close(200, "up").await;
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "the test broker {} did not start; see {}",
                self.node,
                self.dir.join("log").display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the node (every connection drops), then starts it again with its data.
    pub async fn restart(&self) {
        self.stop();
        self.boot().await;
    }

    fn stop(&self) {
        let _ = self
            .command("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .output();
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
