//! Starting, using and stopping a real etcd + kube-apiserver.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::OnceCell;

use crate::assets::Assets;
use crate::error::{Error, Result};
use crate::pki::{self, Pki};

const SUPERVISOR: &str = include_str!("supervise.sh");

/// Field manager used by the harness for server-side apply.
pub const FIELD_MANAGER: &str = "nodemedic-tests";

/// Label put on every namespace the harness creates.
pub const TEST_LABEL: &str = "nodemedic.io/test";

/// How to start a [`ControlPlane`].
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// Where the binaries are.
    pub assets: Assets,
    /// CRD YAML files to install (and wait Established) after the API server is ready.
    pub crd_files: Vec<PathBuf>,
    /// How long to wait for `/readyz`.
    pub ready_timeout: Duration,
    /// Keep the temp dir (logs, certs, data) after shutdown, for debugging.
    /// Default: `NODEMEDIC_KEEP_CONTROL_PLANE=1`.
    pub keep_dir: bool,
    /// Extra `--flag=value` arguments for kube-apiserver.
    pub extra_apiserver_args: Vec<String>,
}

impl ControlPlaneOptions {
    /// Binaries from [`Assets::locate`], CRDs from `crds/yaml/*.yaml` of this repository.
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            assets: Assets::locate()?,
            crd_files: repo_crd_files()?,
            ready_timeout: Duration::from_secs(120),
            keep_dir: std::env::var("NODEMEDIC_KEEP_CONTROL_PLANE").is_ok_and(|v| v == "1"),
            extra_apiserver_args: Vec::new(),
        })
    }
}

/// The CRD manifests committed under `crds/yaml/` (sorted). A control plane
/// without them would answer every test with 404s, so none is an error.
pub fn repo_crd_files() -> Result<Vec<PathBuf>> {
    let dir = crate::repo_root().join("crds").join("yaml");
    let files = yaml_files_in(&dir)?;
    if files.is_empty() {
        return Err(Error::io(
            format!("no CRD manifests in {}", dir.display()),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    Ok(files)
}

/// `*.yaml` / `*.yml` files directly in `dir`, sorted by name.
pub fn yaml_files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("read dir {}", dir.display()), e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| Error::io(format!("read dir {}", dir.display()), e))?
            .path();
        let is_yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml");
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A unique DNS-1123 name for test objects: `<prefix>-<pid>-<counter>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Output of a `kubectl`/`helm` invocation.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// Exit status success.
    pub success: bool,
    /// Exit code, if any.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl std::fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A running etcd + kube-apiserver pair.
///
/// Clients are built per call ([`ControlPlane::client`]) so that they belong to the
/// caller's tokio runtime (every `#[tokio::test]` has its own).
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    server_url: String,
    pki: Pki,
    admin_kubeconfig: PathBuf,
    assets: Assets,
    etcd_url: String,
    etcd_pid: u32,
    /// Replaced when the API server is restarted.
    apiserver_pid: std::sync::atomic::AtomicU32,
    crds: Vec<String>,
    supervisor: Mutex<Option<(Child, ChildStdin)>>,
}

static SHARED: OnceCell<std::result::Result<ControlPlane, String>> = OnceCell::const_new();

impl ControlPlane {
    /// The control plane shared by every test of this test binary, started on first use
    /// (binaries from [`Assets::locate`], CRDs from `crds/yaml/`). It is stopped, and its
    /// temp dir removed, when the test process exits.
    pub async fn shared() -> Result<&'static ControlPlane> {
        let res = SHARED
            .get_or_init(|| async {
                let started = async {
                    let opts = ControlPlaneOptions::from_env()?;
                    ControlPlane::start(opts).await
                };
                started.await.map_err(|e| e.to_string())
            })
            .await;
        res.as_ref()
            .map_err(|msg| Error::SharedStartFailed(msg.clone()))
    }

    /// Start a new control plane. Prefer [`ControlPlane::shared`] in tests.
    /// Free ports are picked by binding and releasing them; if another process takes
    /// one in between, the start is retried with new ports (up to 3 attempts).
    pub async fn start(opts: ControlPlaneOptions) -> Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_once(&opts).await {
                Err(Error::ProcessExited { process, tail, .. })
                    if attempt < 3 && tail.contains("address already in use") =>
                {
                    tracing::warn!(process, attempt, "port taken while starting; retrying");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once(opts: &ControlPlaneOptions) -> Result<Self> {
        let started_at = Instant::now();
        // Removed on early errors; handed to the supervisor once it runs.
        let tmp = tempfile::Builder::new()
            .prefix("nodemedic-cp-")
            .tempdir()
            .map_err(|e| Error::io("create control-plane temp dir", e))?;
        let dir = tmp.path().to_path_buf();
        let pki = pki::generate(&dir.join("pki"))?;
        let [etcd_port, etcd_peer_port, api_port] = free_ports()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let server_url = format!("https://127.0.0.1:{api_port}");

        let etcd_args: Vec<String> = vec![
            opts.assets.etcd.display().to_string(),
            "--name=nodemedic-test".into(),
            format!("--data-dir={}", dir.join("etcd-data").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
            format!("--initial-cluster=nodemedic-test=http://127.0.0.1:{etcd_peer_port}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ];
        let mut api_args: Vec<String> = vec![
            opts.assets.kube_apiserver.display().to_string(),
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            format!("--client-ca-file={}", pki.ca_cert.display()),
            "--authorization-mode=RBAC".into(),
            "--anonymous-auth=true".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", pki.sa_public_key.display()),
            format!(
                "--service-account-signing-key-file={}",
                pki.sa_signing_key.display()
            ),
            // Never 10/8, 172.16/12 or 192.168/16: a reserved benchmarking block.
            "--service-cluster-ip-range=198.19.255.0/24".into(),
            "--allow-privileged=true".into(),
            // No controller-manager runs: nothing would create the `default`
            // ServiceAccount of new namespaces, which this plugin requires for pods.
            "--disable-admission-plugins=ServiceAccount".into(),
            "--endpoint-reconciler-type=none".into(),
            "--profiling=false".into(),
        ];
        api_args.extend(opts.extra_apiserver_args.iter().cloned());

        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(SUPERVISOR)
            .arg("nodemedic-cp")
            .arg(&dir)
            .arg(if opts.keep_dir { "1" } else { "0" })
            .args(&etcd_args)
            .arg("--")
            .args(&api_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io("spawn bash (control-plane supervisor)", e))?;
        // From here on the supervisor removes the directory.
        let _ = tmp.keep();
        let Some(stdin) = child.stdin.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Other("supervisor stdin not captured".into()));
        };

        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(
            &admin_kubeconfig,
            &server_url,
            &pki.ca_cert,
            serde_json::json!({
                "client-certificate": pki.admin_cert,
                "client-key": pki.admin_key,
            }),
        )?;

        let pids_file = dir.join("pids");
        let (etcd_pid, apiserver_pid) = {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(text) = std::fs::read_to_string(&pids_file) {
                    let mut it = text.split_whitespace().map(str::parse::<u32>);
                    if let (Some(Ok(e)), Some(Ok(a))) = (it.next(), it.next()) {
                        break (e, a);
                    }
                }
                if Instant::now() > deadline {
                    drop(stdin);
                    let _ = child.wait();
                    return Err(Error::Other(format!(
                        "control-plane supervisor did not write {}",
                        pids_file.display()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };

        let mut cp = ControlPlane {
            dir,
            server_url,
            pki,
            admin_kubeconfig,
            assets: opts.assets.clone(),
            etcd_url,
            etcd_pid,
            apiserver_pid: std::sync::atomic::AtomicU32::new(apiserver_pid),
            crds: Vec::new(),
            supervisor: Mutex::new(Some((child, stdin))),
        };
        // On any error below, dropping `cp` stops the processes.
        cp.wait_ready(opts.ready_timeout).await?;
        tracing::info!(
            server = %cp.server_url,
            dir = %cp.dir.display(),
            elapsed_ms = started_at.elapsed().as_millis() as u64,
            "kube-apiserver ready"
        );
        if !opts.crd_files.is_empty() {
            cp.crds = cp.install_crds(&opts.crd_files).await?;
        }
        Ok(cp)
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let client = self.client().await?;
        loop {
            if !process_running(self.etcd_pid) {
                return Err(Error::ProcessExited {
                    process: "etcd",
                    log: self.etcd_log(),
                    tail: tail(&self.etcd_log(), 40),
                });
            }
            if !process_running(self.apiserver_pid()) {
                return Err(Error::ProcessExited {
                    process: "kube-apiserver",
                    log: self.apiserver_log(),
                    tail: tail(&self.apiserver_log(), 40),
                });
            }
            let last = match http::Request::get("/readyz").body(Vec::new()) {
                Ok(req) => match client.request_text(req).await {
                    Ok(body) if body.trim() == "ok" => return Ok(()),
                    Ok(body) => format!("/readyz answered {body:?}"),
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    timeout_secs: timeout.as_secs(),
                    reason: last,
                    log: self.apiserver_log(),
                    tail: tail(&self.apiserver_log(), 40),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Apply (server-side) every CRD in `files` and wait until each is Established.
    /// Returns the CRD names.
    pub async fn install_crds(&self, files: &[PathBuf]) -> Result<Vec<String>> {
        let client = self.client().await?;
        let api: Api<CustomResourceDefinition> = Api::all(client);
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let mut names = Vec::new();
        for file in files {
            for crd in read_yaml_documents::<CustomResourceDefinition>(file)? {
                let name = crd.metadata.name.clone().ok_or_else(|| {
                    Error::Other(format!("a CRD in {} has no metadata.name", file.display()))
                })?;
                api.patch(&name, &pp, &Patch::Apply(&crd)).await?;
                names.push(name);
            }
        }
        let mut published = Vec::new();
        for name in &names {
            let crd = wait_crd_established(&api, name, Duration::from_secs(30)).await?;
            for v in crd.spec.versions.iter().filter(|v| v.served) {
                published.push((
                    crd.spec.group.clone(),
                    v.name.clone(),
                    crd.spec.names.kind.clone(),
                ));
            }
        }
        // `kubectl explain` and other OpenAPI clients need the CRD in /openapi/v3,
        // which the API server publishes a moment after Established.
        let client = self.client().await?;
        for (group, version, kind) in published {
            wait_openapi_published(&client, &group, &version, &kind, Duration::from_secs(60))
                .await?;
        }
        Ok(names)
    }

    /// An admin client (client certificate in group `system:masters`).
    pub async fn client(&self) -> Result<Client> {
        client_from_kubeconfig(&self.admin_kubeconfig).await
    }

    /// A client that sends no credentials (user `system:anonymous`); it trusts the CA.
    pub fn anonymous_client(&self) -> Result<Client> {
        let url = self
            .server_url
            .parse::<http::Uri>()
            .map_err(|e| Error::Other(format!("server url {}: {e}", self.server_url)))?;
        let mut config = Config::new(url);
        config.root_cert_file = Some(self.pki.ca_cert.clone());
        Ok(Client::try_from(config)?)
    }

    /// Create ServiceAccount `namespace/name` if needed and write a kubeconfig that
    /// authenticates as it with a token from the TokenRequest API (valid 1h).
    /// It has only the permissions RBAC grants it.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let admin = self.client().await?;
        let sas: Api<ServiceAccount> = Api::namespaced(admin, namespace);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match sas.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let tr = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let issued = sas
            .create_token_request(name, &PostParams::default(), &tr)
            .await?;
        let token = issued
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::Other(format!(
                    "TokenRequest for {namespace}/{name} returned no token"
                ))
            })?;
        let path = self.dir.join(format!(
            "sa-{namespace}-{name}-{}.kubeconfig",
            unique_name("t")
        ));
        write_kubeconfig(
            &path,
            &self.server_url,
            &self.pki.ca_cert,
            serde_json::json!({ "token": token }),
        )?;
        Ok(path)
    }

    /// A client that authenticates as ServiceAccount `namespace/name` (created if needed).
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Result<Client> {
        let path = self.service_account_kubeconfig(namespace, name).await?;
        client_from_kubeconfig(&path).await
    }

    /// Create a namespace with a unique name derived from `prefix`, labelled
    /// `nodemedic.io/test=<name>`. (No controller-manager runs: deleting it leaves it
    /// Terminating, so tests simply leave it.)
    pub async fn create_namespace(&self, prefix: &str) -> Result<String> {
        let name = unique_name(prefix);
        let api: Api<Namespace> = Api::all(self.client().await?);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_LABEL.to_string(), name.clone())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        api.create(&PostParams::default(), &ns).await?;
        Ok(name)
    }

    /// Create a Node object named `<prefix>-<pid>-<n>` with `labels` and a `Ready=True`
    /// condition (no kubelet runs: the Node is only an API object, which is what the
    /// operator watches). Returns its name.
    pub async fn create_node(&self, prefix: &str, labels: &[(&str, &str)]) -> Result<String> {
        use k8s_openapi::api::core::v1::Node;
        let name = unique_name(prefix);
        let api: Api<Node> = Api::all(self.client().await?);
        let mut all_labels: std::collections::BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all_labels.insert("kubernetes.io/hostname".into(), name.clone());
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(all_labels),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        api.create(&PostParams::default(), &node).await?;
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let status = serde_json::json!({"status": {"conditions": [{
            "type": "Ready",
            "status": "True",
            "reason": "NodemedicTestHarness",
            "message": "created by nodemedic-tests (no kubelet)",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }]}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(name)
    }

    /// Run `kubectl` as the admin against this control plane.
    pub async fn kubectl(&self, args: &[&str]) -> Result<CmdOutput> {
        self.kubectl_with(&self.admin_kubeconfig, args, None).await
    }

    /// Run `kubectl` with the given kubeconfig (e.g. from
    /// [`ControlPlane::service_account_kubeconfig`]) and optional stdin.
    pub async fn kubectl_with(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<CmdOutput> {
        let mut cmd = tokio::process::Command::new(&self.assets.kubectl);
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!(
                "--cache-dir={}",
                self.dir.join("kubectl-cache").display()
            ))
            .args(args);
        run(cmd, "kubectl", stdin).await
    }

    /// Run `helm` (if provisioned) against this control plane as the admin.
    pub async fn helm(&self, args: &[&str]) -> Result<CmdOutput> {
        let helm = self
            .assets
            .helm
            .as_ref()
            .ok_or_else(|| Error::MissingBinaries {
                dir: self.assets.dir.clone(),
                missing: "helm".into(),
            })?;
        let mut cmd = tokio::process::Command::new(helm);
        cmd.arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()))
            .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.join("helm/data"))
            .args(args);
        run(cmd, "helm", None).await
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }
    /// etcd client URL.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }
    /// Admin kubeconfig file (for kubectl, helm, or the product binaries).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }
    /// The CA certificate that signed the serving certificate.
    pub fn ca_cert(&self) -> &Path {
        &self.pki.ca_cert
    }
    /// Temp dir holding data, certs and logs (removed at shutdown).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The binaries in use.
    pub fn assets(&self) -> &Assets {
        &self.assets
    }
    /// Names of the CRDs installed at start.
    pub fn installed_crds(&self) -> &[String] {
        &self.crds
    }
    /// Pids of etcd and kube-apiserver.
    pub fn pids(&self) -> (u32, u32) {
        (self.etcd_pid, self.apiserver_pid())
    }

    fn apiserver_pid(&self) -> u32 {
        self.apiserver_pid.load(Ordering::SeqCst)
    }

    fn tell_supervisor(&self, command: &str) -> Result<()> {
        let mut guard = match self.supervisor.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (_, stdin) = guard
            .as_mut()
            .ok_or_else(|| Error::Other("the control plane is shut down".into()))?;
        stdin
            .write_all(format!("{command}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| Error::io(format!("tell the supervisor to {command}"), e))
    }

    /// Stops kube-apiserver (etcd keeps running): for tests of clients that
    /// must survive an API server outage. Returns once the process is gone.
    pub async fn stop_apiserver(&self) -> Result<()> {
        let pid = self.apiserver_pid();
        self.tell_supervisor("stop-apiserver")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while process_running(pid) {
            if Instant::now() > deadline {
                return Err(Error::Other(format!(
                    "kube-apiserver {pid} still running 20 s after stop-apiserver"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Starts kube-apiserver again with the same flags (same port, same
    /// etcd, same keys) and waits until it is ready.
    pub async fn start_apiserver(&self) -> Result<()> {
        let old = self.apiserver_pid();
        self.tell_supervisor("start-apiserver")?;
        let pids_file = self.dir.join("pids");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let new = std::fs::read_to_string(&pids_file)
                .ok()
                .and_then(|t| t.split_whitespace().nth(1)?.parse::<u32>().ok());
            if let Some(pid) = new.filter(|&p| p != old) {
                self.apiserver_pid.store(pid, Ordering::SeqCst);
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Other(
                    "the supervisor did not restart kube-apiserver".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.wait_ready(Duration::from_secs(120)).await
    }
    /// kube-apiserver log file.
    pub fn apiserver_log(&self) -> PathBuf {
        self.dir.join("kube-apiserver.log")
    }
    /// etcd log file.
    pub fn etcd_log(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }
    /// Last `n` lines of the kube-apiserver log (for failure messages).
    pub fn apiserver_log_tail(&self, n: usize) -> String {
        tail(&self.apiserver_log(), n)
    }

    /// Stop both processes (by pid, via the supervisor) and remove the temp dir.
    /// Blocks until done (at most ~25 s).
    pub fn shutdown(&self) {
        let taken = match self.supervisor.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some((mut child, stdin)) = taken {
            drop(stdin);
            if let Err(e) = child.wait() {
                tracing::warn!(error = %e, "waiting for the control-plane supervisor failed");
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Build a client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// Parse every non-empty YAML document of `path` as `T`.
pub fn read_yaml_documents<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(doc).map_err(|source| Error::Yaml {
            path: path.display().to_string(),
            source,
        })?;
        if value.is_null() {
            continue;
        }
        out.push(serde_yaml::from_value(value).map_err(|source| Error::Yaml {
            path: path.display().to_string(),
            source,
        })?);
    }
    Ok(out)
}

async fn wait_openapi_published(
    client: &Client,
    group: &str,
    version: &str,
    kind: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let path = format!("/openapi/v3/apis/{group}/{version}");
    let suffix = format!(".{kind}");
    loop {
        let last = match http::Request::get(path.as_str()).body(Vec::new()) {
            Ok(req) => match client.request::<serde_json::Value>(req).await {
                Ok(doc) => {
                    let found = doc["components"]["schemas"]
                        .as_object()
                        .is_some_and(|m| m.keys().any(|k| k.ends_with(&suffix)));
                    if found {
                        return Ok(());
                    }
                    format!("{kind} not yet in {path}")
                }
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(Error::Other(format!(
                "{kind} ({group}/{version}) not published in OpenAPI v3 within {}s: {last}",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_crd_established(
    api: &Api<CustomResourceDefinition>,
    name: &str,
    timeout: Duration,
) -> Result<CustomResourceDefinition> {
    let deadline = Instant::now() + timeout;
    loop {
        let crd = api.get(name).await?;
        let conditions = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        if conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
        {
            return Ok(crd);
        }
        if Instant::now() > deadline {
            return Err(Error::CrdNotEstablished {
                name: name.to_string(),
                timeout_secs: timeout.as_secs(),
                conditions: conditions
                    .iter()
                    .map(|c| {
                        format!(
                            "{}={} ({})",
                            c.type_,
                            c.status,
                            c.message.as_deref().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes a kubeconfig for `server` (trusting `ca`) that authenticates as `user`
/// (a kubeconfig `user` object: client certificate files, or a token).
pub(crate) fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    user: serde_json::Value,
) -> Result<()> {
    let kc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "nodemedic-test", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{"name": "nodemedic-test", "user": user}],
        "contexts": [{"name": "nodemedic-test", "context": {
            "cluster": "nodemedic-test",
            "user": "nodemedic-test",
        }}],
        "current-context": "nodemedic-test",
    });
    let text = serde_yaml::to_string(&kc).map_err(|source| Error::Yaml {
        path: path.display().to_string(),
        source,
    })?;
    let mut f = std::fs::File::create(path)
        .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

async fn run(
    mut cmd: tokio::process::Command,
    what: &str,
    stdin: Option<&[u8]>,
) -> Result<CmdOutput> {
    use tokio::io::AsyncWriteExt as _;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("spawn {what}"), e))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)
            .await
            .map_err(|e| Error::io(format!("write stdin of {what}"), e))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| Error::io(format!("wait for {what}"), e))?;
    Ok(CmdOutput {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Three distinct free loopback ports (bound together, then released).
fn free_ports() -> Result<[u16; 3]> {
    let mut listeners = Vec::new();
    let mut ports = [0u16; 3];
    for port in &mut ports {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("bind a free port", e))?;
        *port = l
            .local_addr()
            .map_err(|e| Error::io("read bound port", e))?
            .port();
        listeners.push(l);
    }
    Ok(ports)
}

/// True while `pid` exists and is not a zombie.
pub fn process_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start())
            .and_then(|rest| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Last `n` lines of a file (or a note that it could not be read).
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_are_dns_labels() {
        let a = unique_name("nhp");
        let b = unique_name("nhp");
        assert_ne!(a, b);
        for n in [a, b] {
            assert!(n.len() <= 63);
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
        }
    }

    #[test]
    fn free_ports_are_distinct() {
        let [a, b, c] = free_ports().expect("ports");
        assert!(a != b && b != c && a != c);
    }

    #[test]
    fn tail_keeps_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("log");
        std::fs::write(&p, "1\n2\n3\n4\n").expect("write");
        assert_eq!(tail(&p, 2), "3\n4");
        assert!(tail(&dir.path().join("missing"), 2).contains("could not read"));
    }

    #[test]
    fn own_process_is_running_and_bogus_pid_is_not() {
        assert!(process_running(std::process::id()));
        assert!(!process_running(u32::MAX));
    }
}
