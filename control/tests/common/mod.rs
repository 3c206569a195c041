//! Test harness: the real `ringmesh-control` binary as a process on
//! loopback with a temporary config directory, and tonic clients that act
//! as proxies on the discovery stream.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ringmesh_proto::v1::aggregated_discovery_client::AggregatedDiscoveryClient;
use ringmesh_proto::v1::{
    DiscoveryRequest, DiscoveryResponse, NamedPort, Node, ResourceType, Status,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

pub const BIN: &str = env!("CARGO_BIN_EXE_ringmesh-control");

/// The four types a proxy subscribes to, in push order.
pub const FOUR: [ResourceType; 4] = [
    ResourceType::Cluster,
    ResourceType::Endpoints,
    ResourceType::Listener,
    ResourceType::RouteTable,
];

/// A port nothing listens on right now.
pub fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub struct ControlPlane {
    child: Option<Child>,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts the control plane on `files` (name, YAML) with extra flags.
    pub fn start(files: &[(&str, &str)], args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let config_dir = tmp.path().join("mesh");
        std::fs::create_dir(&config_dir).unwrap();
        for (name, text) in files {
            std::fs::write(config_dir.join(name), text).unwrap();
        }
        let mut cp = Self {
            child: None,
            grpc: free_port(),
            admin: free_port(),
            config_dir,
            data_dir: tmp.path().join("data"),
            log: tmp.path().join("control.log"),
            args: args.iter().map(|s| s.to_string()).collect(),
            _tmp: tmp,
        };
        cp.spawn();
        cp
    }

    /// Starts the process (again, after `stop`) with the same directories.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config-dir")
            .arg(&self.config_dir)
            .arg("--listen")
            .arg(self.grpc.to_string())
            .arg("--admin")
            .arg(self.admin.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ringmesh_control::admin::get(&self.admin.to_string(), "/healthz").is_ok() {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("control plane exited with {st}:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "control plane did not start:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn status(&self) -> serde_json::Value {
        let body = ringmesh_control::admin::get(&self.admin.to_string(), "/status").unwrap();
        serde_json::from_str(&body).unwrap()
    }

    pub fn metrics(&self) -> String {
        ringmesh_control::admin::get(&self.admin.to_string(), "/metrics").unwrap()
    }

    /// Replaces a config file atomically (the loader skips dotfiles).
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.config_dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.config_dir.join(name)).unwrap();
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("control plane did not stop on SIGTERM:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `/status` until `check` holds.
    pub async fn wait_status(
        &self,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = self.status();
            if check(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn node(id: &str, service: &str, address: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        id: id.into(),
        service: service.into(),
        namespace: String::new(),
        address: address.into(),
        ports: vec![NamedPort {
            name: "inbound".into(),
            port: 15006,
            protocol: 0,
        }],
        zone: "z1".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// One simulated proxy: a discovery stream.
pub struct Proxy {
    pub node: Node,
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Proxy {
    /// Opens a stream (sends nothing yet).
    pub async fn open(url: &str, node: Node) -> Self {
        let channel = Channel::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = AggregatedDiscoveryClient::new(channel);
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .stream_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { node, tx, rx }
    }

    pub async fn send(&self, req: DiscoveryRequest) {
        self.tx.send(req).await.unwrap();
    }

    /// Subscribes to the four types (node on the first) with these versions.
    pub async fn subscribe(&self, versions: [&str; 4]) {
        for (i, t) in FOUR.iter().enumerate() {
            self.send(DiscoveryRequest {
                node: (i == 0).then(|| self.node.clone()),
                r#type: *t as i32,
                version_info: versions[i].into(),
                response_nonce: String::new(),
                error_detail: None,
                csr: None,
            })
            .await;
        }
    }

    /// The next response, within `within`.
    pub async fn recv(&mut self, within: Duration) -> DiscoveryResponse {
        match tokio::time::timeout(within, self.rx.message()).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => panic!("{}: stream ended", self.node.id),
            Ok(Err(s)) => panic!("{}: stream failed: {s:?}", self.node.id),
            Err(_) => panic!("{}: no response within {within:?}", self.node.id),
        }
    }

    /// The next response; `None` when the stream ended or failed.
    pub async fn next(&mut self) -> Option<DiscoveryResponse> {
        self.rx.message().await.ok().flatten()
    }

    /// Sends without failing when the stream is gone.
    pub async fn try_ack(&self, r: &DiscoveryResponse) -> bool {
        self.tx
            .send(DiscoveryRequest {
                node: None,
                r#type: r.r#type,
                version_info: r.version_info.clone(),
                response_nonce: r.nonce.clone(),
                error_detail: None,
                csr: None,
            })
            .await
            .is_ok()
    }

    /// The stream's end status (error) within `within`.
    pub async fn recv_error(&mut self, within: Duration) -> tonic::Status {
        loop {
            match tokio::time::timeout(within, self.rx.message()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => panic!("{}: stream ended without an error", self.node.id),
                Ok(Err(s)) => return s,
                Err(_) => panic!("{}: no error within {within:?}", self.node.id),
            }
        }
    }

    /// Asserts that nothing arrives for `d`.
    pub async fn expect_nothing(&mut self, d: Duration) {
        if let Ok(r) = tokio::time::timeout(d, self.rx.message()).await {
            panic!("{}: expected nothing, got {r:?}", self.node.id);
        }
    }

    pub async fn ack(&self, r: &DiscoveryResponse) {
        self.send(DiscoveryRequest {
            node: None,
            r#type: r.r#type,
            version_info: r.version_info.clone(),
            response_nonce: r.nonce.clone(),
            error_detail: None,
            csr: None,
        })
        .await;
    }

    pub async fn nack(&self, r: &DiscoveryResponse, running: &str, message: &str) {
        self.send(DiscoveryRequest {
            node: None,
            r#type: r.r#type,
            version_info: running.into(),
            response_nonce: r.nonce.clone(),
            error_detail: Some(Status {
                code: 3,
                message: message.into(),
            }),
            csr: None,
        })
        .await;
    }

    /// Subscribes fresh, receives the four types in order and ACKs each.
    pub async fn start(&mut self) -> Vec<DiscoveryResponse> {
        self.subscribe(["", "", "", ""]).await;
        let mut out = Vec::new();
        for t in FOUR {
            let r = self.recv(Duration::from_secs(5)).await;
            assert_eq!(r.r#type(), t, "{}: push order", self.node.id);
            self.ack(&r).await;
            out.push(r);
        }
        out
    }
}

/// The endpoint addresses of `cluster` in an ENDPOINTS response.
pub fn endpoint_addresses(r: &DiscoveryResponse, cluster: &str) -> Vec<String> {
    use ringmesh_proto::v1::resource::Kind;
    assert_eq!(r.r#type(), ResourceType::Endpoints);
    let res = r
        .resources
        .iter()
        .find(|x| x.name == cluster)
        .unwrap_or_else(|| panic!("no endpoints {cluster} in {r:?}"));
    match &res.kind {
        Some(Kind::Endpoints(e)) => e.endpoints.iter().map(|e| e.address.clone()).collect(),
        other => panic!("{other:?}"),
    }
}

pub fn names(r: &DiscoveryResponse) -> Vec<&str> {
    r.resources.iter().map(|x| x.name.as_str()).collect()
}

pub fn file_exists(p: &Path) -> bool {
    p.exists()
}
