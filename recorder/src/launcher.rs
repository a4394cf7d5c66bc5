//! `retrace cluster`: run a scenario's nodes as real processes on 127.0.0.1, drive the
//! scenario's workload against their client ports, apply its crash faults for real (SIGKILL,
//! then restart), stop everything cleanly, and leave one log per node incarnation plus a
//! manifest in the run's directory.

use crate::client::Client;
use crate::diag::{self, Status};
use crate::http_port::HttpClient;
use crate::log::wall_now_ns;
use crate::log::RecordError;
use crate::manifest::{Ended, Incarnation, Manifest, ManifestNode, WorkloadStats};
use crate::policy::{LogPolicy, ShowDuration};
use crate::tls::TlsFiles;
use retrace_sim::client::{ClientCtx, REFUSED_PAUSE_NS};
use retrace_sim::http::{HttpApi, HttpRequest, Protocol};
use retrace_sim::rng::{derive_seed, Purpose};
use retrace_sim::scenario::{ClosedLoop, FaultAction, Workload};
use retrace_sim::{Model, Node, NodeId, Scenario, SimRng};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Requests waiting for a worker in open-loop mode before new arrivals are shed.
const OPEN_LOOP_BACKLOG: usize = 1024;
/// Workers sending open-loop requests.
const OPEN_LOOP_WORKERS: usize = 16;
/// How long a node has to start listening, and to stop after its stdin closes.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// An open-loop request: the target node and the request as it goes on the wire.
type Job = (usize, Payload);

/// A workload request as it goes on the wire.
enum Payload {
    /// The message as JSON, for the framed client port.
    Framed(Vec<u8>),
    /// The request the model's HTTP mapping makes for the message.
    Http(HttpRequest),
}

impl Payload {
    /// `msg` as the scenario's workload protocol sends it (`http`: through `api`).
    fn of<M: serde::Serialize>(api: Option<&dyn HttpApi<M>>, msg: &M) -> Payload {
        match api.and_then(|api| api.client_request(msg)) {
            Some(request) => Payload::Http(request),
            None => Payload::Framed(serde_json::to_vec(msg).unwrap_or_default()),
        }
    }
}

/// A workload connection to one node's client port, in the payload's protocol.
enum Conn {
    Framed(Client),
    Http(HttpClient),
}

impl Conn {
    /// Sends one payload; whether an answer came back (for HTTP: any response the node
    /// made, not a server error of the port's own).
    fn call(&mut self, payload: &Payload) -> bool {
        match (self, payload) {
            (Conn::Framed(c), Payload::Framed(json)) => c
                .request(json)
                .is_ok_and(|reply| reply.get("reply").is_some()),
            (Conn::Http(c), Payload::Http(request)) => c
                .request(request)
                .is_ok_and(|response| !matches!(response.status, 503 | 504)),
            _ => false,
        }
    }
}

/// How the load is applied.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// The scenario's `[workload]`: Poisson arrivals at its rate (open loop).
    Scenario,
    /// `workers` clients that each send a request as soon as the previous one is answered.
    Closed { workers: usize },
    /// No load at all.
    None,
}

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The binary that has the `node` subcommand (normally this one).
    pub exe: PathBuf,
    pub scenario_path: PathBuf,
    pub dir: PathBuf,
    pub duration: Duration,
    pub fsync: String,
    pub batch_ms: u64,
    pub record: bool,
    pub strict: bool,
    pub load: Load,
    /// Peer links over mutual TLS with a throwaway cluster CA made for the run (written to
    /// `DIR/tls/`); `false` runs them as plaintext, which anyone on the network can forge.
    pub tls: bool,
    /// How each node keeps its log.
    pub policy: LogPolicy,
}

/// The command line of one node process: the one place that spells `retrace node`'s flags
/// for the launcher.
pub fn node_args(
    opts: &ClusterOptions,
    id: NodeId,
    incarnation: u32,
    peers: &[SocketAddr],
    client: SocketAddr,
    log: &Path,
) -> Vec<String> {
    let peers: Vec<String> = peers.iter().map(|a| a.to_string()).collect();
    let mut args = vec![
        "node".to_string(),
        opts.scenario_path.display().to_string(),
        "--id".into(),
        id.0.to_string(),
        "--incarnation".into(),
        incarnation.to_string(),
        "--peers".into(),
        peers.join(","),
        "--client".into(),
        client.to_string(),
        "--storage".into(),
        opts.dir
            .join("data")
            .join(format!("n{}.storage", id.0))
            .display()
            .to_string(),
        "--fsync".into(),
        opts.fsync.clone(),
        "--batch-ms".into(),
        opts.batch_ms.to_string(),
    ];
    if opts.record {
        args.extend(["--log".to_string(), log.display().to_string()]);
    }
    if opts.tls {
        let files = TlsFiles::in_dir(&opts.dir.join("tls"), id.0);
        for (flag, path) in [
            ("--tls-cert", files.cert),
            ("--tls-key", files.key),
            ("--tls-ca", files.ca),
        ] {
            args.extend([flag.to_string(), path.display().to_string()]);
        }
    } else {
        args.push("--insecure-plaintext".into());
    }
    if opts.strict {
        args.push("--record-strict".into());
    }
    let p = &opts.policy;
    args.extend([
        "--segment-size".to_string(),
        p.segment_bytes_max.to_string(),
        "--segment-age".into(),
        ShowDuration(p.segment_age_max).to_string(),
        "--retain".into(),
        p.retain.to_string(),
        "--snapshot-every".into(),
        p.snapshot_every.to_string(),
    ]);
    args
}

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// What nodes reported on their status pipes: (node, incarnation, why recording stopped).
type Notices = Arc<Mutex<Vec<(usize, u32, String)>>>;

/// Reads a node's status lines (`diag::status`) off its stdout pipe: a recording that
/// stopped reaches the operator once, through the launcher's stderr, and the manifest —
/// not through the node's own stderr file, which sits on the disk that just filled.
fn relay_status(
    out: std::process::ChildStdout,
    name: String,
    node: usize,
    incarnation: u32,
    notices: Notices,
) {
    let _ = thread::Builder::new()
        .name(format!("status-{name}"))
        .spawn(move || {
            use std::io::{BufRead, Read};
            let mut lines = std::io::BufReader::new(out);
            let mut line = String::new();
            // A line longer than this is not a status line; the limit bounds the buffer.
            while matches!(Read::by_ref(&mut lines).take(64 << 10).read_line(&mut line), Ok(n) if n > 0) {
                match diag::parse_status(&line) {
                    Some(Status::RecordingStopped { reason, .. }) => {
                        diag::warn(format_args!(
                            "warning: {name} (life {incarnation}): recording stopped: {reason}; the node keeps serving unrecorded"
                        ));
                        if let Ok(mut n) = notices.lock() {
                            n.push((node, incarnation, reason));
                        }
                    }
                    Some(Status::StorageNotPersisted { reason }) => diag::warn(format_args!(
                        "warning: {name} (life {incarnation}): its durable storage is not persisted: {reason}"
                    )),
                    None => {}
                }
                line.clear();
            }
        });
}

struct Cluster<'a> {
    opts: &'a ClusterOptions,
    peers: Vec<SocketAddr>,
    clients: Vec<SocketAddr>,
    procs: Vec<Option<Proc>>,
    manifest: Manifest,
    notices: Notices,
}

impl Cluster<'_> {
    /// Writes the manifest with what nodes have reported so far.
    fn write_manifest(&mut self) -> Result<(), String> {
        if let Ok(notices) = self.notices.lock() {
            for (node, inc, reason) in notices.iter() {
                if let Some(i) = self.manifest.nodes[*node]
                    .incarnations
                    .get_mut(*inc as usize)
                {
                    i.recording_stopped = Some(reason.clone());
                }
            }
        }
        self.manifest.write(&self.opts.dir).map_err(|e| e.0)
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let incarnation = self.manifest.nodes[i].incarnations.len() as u32;
        let name = self.manifest.nodes[i].name.clone();
        let log_name = crate::segments::log_file_name(&name, incarnation);
        let args = node_args(
            self.opts,
            NodeId(i as u32),
            incarnation,
            &self.peers,
            self.clients[i],
            &self.opts.dir.join(&log_name),
        );
        let stderr_path = self.opts.dir.join(format!("{name}.{incarnation}.stderr"));
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(|e| format!("{}: {e}", stderr_path.display()))?;
        let mut child = Command::new(&self.opts.exe)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.opts.exe.display()))?;
        let stdin = child.stdin.take();
        if let Some(out) = child.stdout.take() {
            relay_status(out, name.clone(), i, incarnation, self.notices.clone());
        }
        self.procs[i] = Some(Proc { child, stdin });
        self.manifest.nodes[i].incarnations.push(Incarnation {
            log: if self.opts.record {
                log_name
            } else {
                String::new()
            },
            started_wall_ns: wall_now_ns(),
            pid: self.procs[i].as_ref().map_or(0, |p| p.child.id()),
            ended: Ended::Running,
            recording_stopped: None,
        });
        Ok(())
    }

    fn ended(&mut self, i: usize, how: Ended) {
        if let Some(inc) = self.manifest.nodes[i].incarnations.last_mut() {
            inc.ended = how;
        }
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            let _ = p.child.kill(); // SIGKILL on Unix: no chance to flush anything
            let _ = p.child.wait();
            self.ended(i, Ended::Killed);
        }
    }

    fn wait_ready(&mut self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if std::net::TcpStream::connect_timeout(&self.clients[i], Duration::from_millis(100))
                .is_ok()
            {
                return Ok(());
            }
            if let Some(p) = self.procs[i].as_mut() {
                if let Ok(Some(status)) = p.child.try_wait() {
                    let name = &self.manifest.nodes[i].name;
                    let inc = self.manifest.nodes[i].incarnations.len() - 1;
                    let err =
                        std::fs::read_to_string(self.opts.dir.join(format!("{name}.{inc}.stderr")))
                            .unwrap_or_default();
                    return Err(format!(
                        "{name} exited ({status}) before listening: {}",
                        err.trim()
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not listen within {START_TIMEOUT:?}",
                    self.manifest.nodes[i].name
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes every node's stdin (the signal to stop cleanly), then waits.
    fn stop_all(&mut self) {
        for p in self.procs.iter_mut().flatten() {
            p.stdin = None;
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for i in 0..self.procs.len() {
            let Some(mut p) = self.procs[i].take() else {
                continue;
            };
            let how = loop {
                match p.child.try_wait() {
                    Ok(Some(status)) if status.success() => break Ended::Stopped,
                    Ok(Some(status)) => break Ended::Exited(status.code()),
                    Ok(None) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(10))
                    }
                    _ => {
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        break Ended::KilledAtStop;
                    }
                }
            };
            self.ended(i, how);
        }
    }
}

struct LoadStats {
    sent: AtomicU64,
    answered: AtomicU64,
    errors: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

/// One client worker: keeps a connection per node, reconnecting after errors.
fn send_one(
    conns: &mut [Option<Conn>],
    addrs: &[SocketAddr],
    to: usize,
    payload: &Payload,
    stats: &LoadStats,
) {
    stats.sent.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    if conns[to].is_none() {
        let connect = Duration::from_millis(200);
        conns[to] = match payload {
            Payload::Framed(_) => Client::connect(addrs[to], connect).ok().map(Conn::Framed),
            Payload::Http(_) => HttpClient::connect(addrs[to], connect).ok().map(Conn::Http),
        };
    }
    let ok = conns[to].as_mut().is_some_and(|c| c.call(payload));
    if !ok {
        conns[to] = None;
    }
    if ok {
        stats.answered.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = stats.latencies_us.lock() {
            l.push(started.elapsed().as_micros() as u64);
        }
    } else {
        stats.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one closed-loop client thread needs.
struct ClientRun {
    index: u32,
    workload: Workload,
    closed: ClosedLoop,
    seed: u64,
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    stats: Arc<LoadStats>,
}

/// One of the model's stateful clients against the real cluster: the same `Client` code the
/// simulator runs, on real time, with the scenario's think time and timeout. A request's
/// answer is what the node replied; no reply in time (or no connection) is a timeout, and
/// the connection is dropped so that a late reply never answers the next call.
fn run_client<M: Model>(options: &M::Options, run: ClientRun) {
    let Some(mut client) = M::client(options, run.index) else {
        return;
    };
    let n = run.addrs.len();
    let mut rng = SimRng::new(derive_seed(
        run.seed,
        Purpose::Client,
        u64::from(run.index),
        0,
    ));
    let timeout = Duration::from_nanos(run.closed.timeout_ns);
    let mut conns: Vec<Option<Client>> = run.addrs.iter().map(|_| None).collect();
    let started = Instant::now();
    let mut next_at = Duration::from_nanos(run.workload.start_ns);
    let stats = &run.stats;
    loop {
        let now = started.elapsed();
        if run.stop.load(Ordering::Relaxed)
            || run
                .workload
                .stop_ns
                .is_some_and(|s| now.as_nanos() as u64 >= s)
        {
            return;
        }
        if next_at > now {
            thread::sleep((next_at - now).min(Duration::from_millis(50)));
            continue;
        }
        let now_ns = now.as_nanos() as u64;
        let mut cx = ClientCtx::new(run.index, n as u32, now_ns, &mut rng);
        let Some(call) = client.request(&mut cx) else {
            return;
        };
        // The cap counts every call of every client, as in the simulator.
        let issued = stats.sent.fetch_add(1, Ordering::Relaxed);
        if run.workload.requests.is_some_and(|max| issued >= max) {
            stats.sent.fetch_sub(1, Ordering::Relaxed); // not sent after all
            return;
        }
        let to = call.to.index() % n;
        let json = serde_json::to_vec(&call.msg).unwrap_or_default();
        let sent = Instant::now();
        let answer = call_node(&mut conns, &run.addrs, to, &json, timeout)
            .and_then(|reply| serde_json::from_value::<<M::Node as Node>::Msg>(reply).ok());
        let mut cx = ClientCtx::new(
            run.index,
            n as u32,
            started.elapsed().as_nanos() as u64,
            &mut rng,
        );
        let failed = answer.is_none();
        match answer {
            Some(msg) => {
                stats.answered.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut l) = stats.latencies_us.lock() {
                    l.push(sent.elapsed().as_micros() as u64);
                }
                client.on_answer(&mut cx, msg);
            }
            None => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                client.on_timeout(&mut cx);
            }
        }
        let asked = cx.asked_next_after_ns();
        // After a failure, a pause as the simulator makes after a refusal: a node that is
        // down refuses at once, and a client with no think time would spin on it.
        let pause_min_ns = if failed { REFUSED_PAUSE_NS } else { 0 };
        let think_ns = asked
            .unwrap_or_else(|| {
                let think = run.closed.think;
                rng.between(think.lo_ns, think.hi_ns)
            })
            .max(pause_min_ns);
        next_at = started.elapsed() + Duration::from_nanos(think_ns);
    }
}

/// One call on a node's client port: its reply's `reply` field, or `None` (no connection,
/// no reply within `timeout`, an error reply); a failed connection is dropped.
fn call_node(
    conns: &mut [Option<Client>],
    addrs: &[SocketAddr],
    to: usize,
    json: &[u8],
    timeout: Duration,
) -> Option<serde_json::Value> {
    if conns[to].is_none() {
        let connect = timeout.min(Duration::from_millis(200));
        conns[to] = Client::connect(addrs[to], connect).ok();
        if let Some(c) = conns[to].as_mut() {
            if c.set_timeout(timeout).is_err() {
                conns[to] = None;
            }
        }
    }
    let reply = conns[to].as_mut().map(|c| c.request(json));
    match reply {
        Some(Ok(mut reply)) => reply.get_mut("reply").map(serde_json::Value::take),
        _ => {
            conns[to] = None;
            None
        }
    }
}

/// The model's HTTP mapping when the scenario's workload speaks HTTP.
fn http_api<M: Model>(
    http: bool,
    options: &M::Options,
) -> Option<Box<dyn HttpApi<<M::Node as Node>::Msg>>> {
    http.then(|| M::http(options))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn start_load<M: Model>(
    scenario: &Scenario<M::Options>,
    load: Load,
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    stats: Arc<LoadStats>,
) -> Vec<thread::JoinHandle<()>> {
    let options = scenario.options.clone();
    let seed = scenario.seed;
    let scenario_http = scenario
        .workload
        .is_some_and(|w| w.protocol == Protocol::Http);
    match load {
        Load::None => Vec::new(),
        Load::Closed { workers } => (0..workers.max(1))
            .map(|w| {
                let (options, addrs, stop, stats) =
                    (options.clone(), addrs.clone(), stop.clone(), stats.clone());
                thread::spawn(move || {
                    let mut rng = SimRng::new(derive_seed(seed, Purpose::ClusterLoad, w as u64, 0));
                    let mut conns: Vec<Option<Conn>> = addrs.iter().map(|_| None).collect();
                    let api = http_api::<M>(scenario_http, &options);
                    while !stop.load(Ordering::Relaxed) {
                        let Some((to, msg)) = M::request(&options, &mut rng) else {
                            return;
                        };
                        let payload = Payload::of(api.as_deref(), &msg);
                        send_one(
                            &mut conns,
                            &addrs,
                            to.index() % addrs.len(),
                            &payload,
                            &stats,
                        );
                    }
                })
            })
            .collect(),
        Load::Scenario => {
            let Some(workload) = scenario.workload else {
                return Vec::new();
            };
            if let Some(closed) = workload.clients {
                return (0..closed.clients)
                    .map(|i| {
                        let ctx = ClientRun {
                            index: i,
                            workload,
                            closed,
                            seed,
                            addrs: addrs.clone(),
                            stop: stop.clone(),
                            stats: stats.clone(),
                        };
                        let options = options.clone();
                        thread::spawn(move || run_client::<M>(&options, ctx))
                    })
                    .collect();
            }
            let Some(mean_ns) = workload.rate.mean_interval_ns() else {
                return Vec::new();
            };
            let (tx, rx) = sync_channel::<Job>(OPEN_LOOP_BACKLOG);
            let rx = Arc::new(Mutex::new(rx));
            let mut handles: Vec<thread::JoinHandle<()>> = (0..OPEN_LOOP_WORKERS)
                .map(|_| {
                    let (rx, addrs, stats): (Arc<Mutex<Receiver<Job>>>, _, _) =
                        (rx.clone(), addrs.clone(), stats.clone());
                    thread::spawn(move || {
                        let mut conns: Vec<Option<Conn>> = addrs.iter().map(|_| None).collect();
                        loop {
                            let job = match rx.lock() {
                                Ok(r) => r.recv(),
                                Err(_) => return,
                            };
                            let Ok((to, payload)) = job else { return };
                            send_one(&mut conns, &addrs, to, &payload, &stats);
                        }
                    })
                })
                .collect();
            let n = addrs.len();
            let api = http_api::<M>(scenario_http, &options);
            handles.push(thread::spawn(move || {
                let mut rng = SimRng::new(derive_seed(seed, Purpose::Workload, 0, 0));
                let started = Instant::now();
                let mut at = Duration::from_nanos(workload.start_ns);
                let mut issued = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if workload.requests.is_some_and(|max| issued >= max)
                        || workload.stop_ns.is_some_and(|s| at.as_nanos() as u64 >= s)
                    {
                        break;
                    }
                    let now = started.elapsed();
                    if at > now {
                        thread::sleep((at - now).min(Duration::from_millis(50)));
                        continue;
                    }
                    let Some((to, msg)) = M::request(&options, &mut rng) else {
                        break;
                    };
                    let payload = Payload::of(api.as_deref(), &msg);
                    if tx.try_send((to.index() % n, payload)).is_err() {
                        stats.errors.fetch_add(1, Ordering::Relaxed); // shed: workers are saturated
                    }
                    issued += 1;
                    at += Duration::from_nanos(rng.exponential_ns(mean_ns).max(1));
                }
            }));
            handles
        }
    }
}

/// Runs the cluster and returns its manifest (also written to `opts.dir`).
pub fn run_cluster<M: Model>(
    scenario: &Scenario<M::Options>,
    opts: &ClusterOptions,
) -> Result<Manifest, RecordError> {
    let n = scenario.nodes.len();
    std::fs::create_dir_all(opts.dir.join("data"))
        .map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    if opts.tls {
        crate::tls::generate_cluster(&opts.dir.join("tls"), n)?;
    }
    let addrs = crate::ports::free_addrs(2 * n)?;
    let (peers, clients) = addrs.split_at(n);
    let mut manifest = Manifest {
        model: scenario.model.clone(),
        scenario_name: scenario.name.clone(),
        scenario_toml: scenario.source.clone(),
        recording: opts.record,
        fsync: opts.fsync.clone(),
        transport: if opts.tls {
            "mutual TLS (a throwaway CA in tls/)".into()
        } else {
            "plaintext (insecure: peers are not authenticated)".into()
        },
        started_wall_ns: wall_now_ns(),
        ..Manifest::default()
    };
    for (i, spec) in scenario.nodes.iter().enumerate() {
        manifest.nodes.push(ManifestNode {
            name: spec.name.clone(),
            role: spec.role.clone(),
            peer_addr: peers[i].to_string(),
            client_addr: clients[i].to_string(),
            incarnations: Vec::new(),
        });
    }
    let kinds = [
        (
            scenario
                .faults
                .iter()
                .any(|f| matches!(f.action, FaultAction::Cut { .. })),
            "partitions and link cuts",
        ),
        (
            scenario
                .faults
                .iter()
                .any(|f| matches!(f.action, FaultAction::ClockJump { .. })),
            "clock jumps",
        ),
        (
            scenario.network.drop > 0.0 || scenario.network.duplicate > 0.0,
            "message loss and duplication",
        ),
        (
            scenario.random_faults.crash_rate.per_second > 0.0,
            "random crashes",
        ),
    ];
    for (present, what) in kinds {
        if present {
            manifest.warnings.push(format!(
                "{what} are simulated only: `retrace cluster` runs a real network as it is"
            ));
        }
    }
    let mut cluster = Cluster {
        opts,
        peers: peers.to_vec(),
        clients: clients.to_vec(),
        procs: (0..n).map(|_| None).collect(),
        manifest,
        notices: Arc::new(Mutex::new(Vec::new())),
    };
    let result = drive::<M>(scenario, &mut cluster);
    cluster.stop_all();
    cluster.manifest.ended_wall_ns = wall_now_ns();
    let stats = result?;
    cluster.manifest.workload = stats;
    // Give the status relays a moment to read what stopped nodes printed last.
    thread::sleep(Duration::from_millis(50));
    cluster.write_manifest()?;
    Ok(cluster.manifest)
}

fn drive<M: Model>(
    scenario: &Scenario<M::Options>,
    cluster: &mut Cluster<'_>,
) -> Result<WorkloadStats, RecordError> {
    let n = scenario.nodes.len();
    for i in 0..n {
        cluster.spawn(i)?;
    }
    for i in 0..n {
        cluster.wait_ready(i)?;
    }
    // Written now too, so that tools (and tests) can find the nodes while they run; this
    // also reserves the file's room for the final write (`Manifest::write`).
    cluster.write_manifest()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(LoadStats {
        sent: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        latencies_us: Mutex::new(Vec::new()),
    });
    let started = Instant::now();
    let handles = start_load::<M>(
        scenario,
        cluster.opts.load,
        cluster.clients.clone(),
        stop.clone(),
        stats.clone(),
    );

    // Process faults, in time order: (when, node, true = kill / false = start).
    let mut plan: Vec<(Duration, usize, bool)> = Vec::new();
    for f in &scenario.faults {
        let at = Duration::from_nanos(f.at_ns);
        match f.action {
            FaultAction::Crash {
                node,
                restart_after_ns,
            } => {
                plan.push((at, node.index(), true));
                if let Some(after) = restart_after_ns {
                    plan.push((at + Duration::from_nanos(after), node.index(), false));
                }
            }
            FaultAction::Restart { node } => plan.push((at, node.index(), false)),
            _ => {}
        }
    }
    plan.sort_by_key(|(at, i, kill)| (*at, *i, !*kill));
    let mut outcome = Ok(());
    for (at, i, kill) in plan {
        if at >= cluster.opts.duration {
            break;
        }
        let now = started.elapsed();
        if at > now {
            thread::sleep(at - now);
        }
        if kill {
            cluster.kill(i);
        } else if cluster.procs[i].is_none() {
            if let Err(e) = cluster.spawn(i).and_then(|_| cluster.wait_ready(i)) {
                outcome = Err(e);
                break;
            }
        }
    }
    if outcome.is_ok() {
        let now = started.elapsed();
        if cluster.opts.duration > now {
            thread::sleep(cluster.opts.duration - now);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for h in handles {
        let _ = h.join();
    }
    outcome?;
    let mut lat = stats
        .latencies_us
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_unstable();
    let answered = stats.answered.load(Ordering::Relaxed);
    Ok(WorkloadStats {
        sent: stats.sent.load(Ordering::Relaxed),
        answered,
        errors: stats.errors.load(Ordering::Relaxed),
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
        throughput_per_s: answered as f64 / elapsed.as_secs_f64().max(1e-9),
    })
}
