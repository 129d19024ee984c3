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
    prometheus_port: Option<u16>,
    dir: PathBuf,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl TestBroker {
    /// Starts a node and waits until it takes AMQP connections.
    pub async fn start() -> Self {
        Self::start_node(None).await
    }

    /// As [`TestBroker::start`], with the rabbitmq_prometheus plugin answering on the port
    /// [`TestBroker::prometheus_port`] gives.
    pub async fn start_with_prometheus() -> Self {
        Self::start_node(Some(free_port())).await
    }

    /// The port of the node's Prometheus endpoint, when started with it.
    pub fn prometheus_port(&self) -> Option<u16> {
        self.prometheus_port
    }

    async fn start_node(prometheus_port: Option<u16>) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("hookrelay-rabbit-{id}"));
        std::fs::create_dir_all(&dir).expect("a folder for the node");
        let port = free_port();
        let broker = Self {
            node: format!("hrtest{}@localhost", &id[..12]),
            port,
            dist_port: free_port(),
            prometheus_port,
            dir,
        };
        let mut config =
            format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n");
        let mut plugins = "[].\n".to_owned();
        if let Some(p) = prometheus_port {
            config.push_str(&format!(
                "prometheus.tcp.port = {p}\nprometheus.tcp.ip = 127.0.0.1\n"
            ));
            plugins = "[rabbitmq_prometheus].\n".to_owned();
        }
        std::fs::write(broker.dir.join("rabbitmq.conf"), config).expect("the node's config");
        std::fs::write(broker.dir.join("enabled_plugins"), plugins).expect("the node's plugins");
        // The server runs as the `rabbitmq` user, which must own its folders.
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&broker.dir)
            .status();
        broker.boot().await;
        broker
    }

    /// The operating system's process id of the node, while it runs.
    pub fn os_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
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
        // With the open-files limit RabbitMQ asks for in production (its systemd unit sets
        // 65 536; this machine's hard limit may be lower): a classic queue of version 2 (the
        // shared queues, and webhook queues wherever it is the broker's default) keeps its
        // files open while it holds messages, and thousands of webhook queues would hit the
        // 1 024 that Debian's wrapper (`su`, through PAM) leaves. So the server is run as
        // the `rabbitmq` user by `setpriv`, which keeps the limit.
        let status = self
            .command("sh")
            .current_dir("/var/lib/rabbitmq")
            .args([
                "-c",
                "ulimit -n 65536 2>/dev/null || ulimit -n \"$(ulimit -Hn)\"; \
                 exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
                 env HOME=/var/lib/rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server -detached",
            ])
            .status()
            .expect("rabbitmq-server runs (Debian's rabbitmq-server package)");
        assert!(status.success(), "rabbitmq-server -detached failed");
        let started = Instant::now();
        loop {
            if let Ok(connection) = hookrelay_broker::connect(&self.url()).await {
                let _ = connection.close().await;
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

    /// Starts a node that [`TestBroker::stop`] stopped, with its data (a cluster member
    /// rejoins its cluster).
    pub async fn start_again(&self) {
        self.boot().await;
    }

    /// Stops the node; [`TestBroker::restart`] stops and starts it with its data. A node
    /// that has not stopped after a minute (closing ten thousand queues can take longer) is
    /// killed: its data is the test's only.
    pub fn stop(&self) {
        let pid = self.os_pid();
        // `status`, not `output`: the command line tool's own Erlang VM may outlive `timeout`
        // and hold its output open.
        let _ = self
            .command("timeout")
            .args(["60", "rabbitmqctl", "-n", &self.node, "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        // Only that very node's process: a pid may have been reused since.
        let ours = |pid: u32| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|var| var == format!("RABBITMQ_NODENAME={}", self.node).as_bytes())
            })
        };
        if let Some(pid) = pid.filter(|p| ours(*p)) {
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }

    /// Removes the data of a stopped node (its queues and the messages in them), as a
    /// machine lost with its disk would.
    pub fn lose_disk(&self) {
        std::fs::remove_dir_all(self.dir.join("mnesia")).expect("the node's data removed");
    }

    /// Runs `rabbitmqctl -n <this node> args…` and answers its output.
    pub fn ctl(&self, args: &[&str]) -> String {
        self.tool("rabbitmqctl", args)
    }

    /// Runs one of RabbitMQ's command line tools (`rabbitmqctl`, `rabbitmq-queues`) against
    /// this node and answers its output.
    pub fn tool(&self, program: &str, args: &[&str]) -> String {
        let out = self
            .command(program)
            .args(["-n", &self.node])
            .args(args)
            .output()
            .expect("rabbitmqctl runs");
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A RabbitMQ cluster of test nodes of its own (`TestBroker`s joined to the first).
pub struct TestCluster {
    pub nodes: Vec<TestBroker>,
}

impl TestCluster {
    pub async fn start(size: usize) -> Self {
        let mut nodes: Vec<TestBroker> = Vec::with_capacity(size);
        for _ in 0..size {
            let node = TestBroker::start().await;
            if let Some(first) = nodes.first() {
                node.ctl(&["stop_app"]);
                node.ctl(&["join_cluster", &first.node]);
                node.ctl(&["start_app"]);
            }
            nodes.push(node);
        }
        Self { nodes }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
