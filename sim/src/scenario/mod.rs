//! Scenario files: which model to run with which options, the network, clocks, workload,
//! faults, time limit and seed. The format is documented in `scenarios/README.md`.

mod error;
mod units;

use crate::limits;
pub use error::ScenarioError;
pub use units::{parse_duration_ns, Dur, DurRange, Prob, Rate, SignedDur, SignedDurRange};

use crate::http::Protocol;
use crate::ids::NodeId;
use crate::model::{Model, NodeSpec};
use serde::Deserialize;
use toml::Spanned;

/// The first pass reads only the model's name, to know which options type to expect.
#[derive(Deserialize)]
struct ModelName {
    model: Option<Spanned<String>>,
}

/// Reads the `model = "..."` key of a scenario.
pub fn model_name(file: &str, source: &str) -> Result<String, ScenarioError> {
    // Checked before anything parses it: the whole text goes into every trace header.
    if source.len() as u64 > limits::MAX_SCENARIO_BYTES {
        return Err(ScenarioError::whole_file(
            file,
            format!(
                "scenario of {} bytes exceeds the {}-byte limit",
                source.len(),
                limits::MAX_SCENARIO_BYTES
            ),
        ));
    }
    let parsed: ModelName = toml::from_str(source).map_err(|e| toml_error(file, source, &e))?;
    parsed.model.map(Spanned::into_inner).ok_or_else(|| {
        ScenarioError::whole_file(
            file,
            "missing top-level key `model` (for example `model = \"kv\"`)",
        )
    })
}

pub(crate) fn toml_error(file: &str, source: &str, e: &toml::de::Error) -> ScenarioError {
    let message = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => ScenarioError::at_offset(file, source, span.start, message),
        None => ScenarioError::whole_file(file, message),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File<O> {
    #[allow(dead_code)]
    model: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    seed: u64,
    time_limit: Option<Dur>,
    max_events: Option<u64>,
    #[serde(default)]
    swarm: bool,
    #[serde(default)]
    model_options: O,
    #[serde(default)]
    network: NetworkFile,
    #[serde(default)]
    clocks: ClocksFile,
    #[serde(default)]
    workload: WorkloadFile,
    #[serde(default)]
    faults: Vec<FaultFile>,
    #[serde(default)]
    random_faults: RandomFaultsFile,
    /// `[services.NAME]`, by name (a `BTreeMap`, so in name order).
    #[serde(default)]
    services: std::collections::BTreeMap<String, ServiceFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    address: Option<Spanned<String>>,
    latency: Option<DurRange>,
    #[serde(default)]
    reset: Prob,
    #[serde(default)]
    hang: Prob,
    #[serde(default)]
    crash: Prob,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    latency: Option<DurRange>,
    #[serde(default)]
    drop: Prob,
    #[serde(default)]
    duplicate: Prob,
    #[serde(default)]
    link: Vec<LinkFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkFile {
    from: Spanned<String>,
    to: Spanned<String>,
    latency: Option<DurRange>,
    drop: Option<Prob>,
    duplicate: Option<Prob>,
    /// Also apply to the reverse direction (default true).
    #[serde(default = "yes")]
    both_ways: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ClocksFile {
    #[serde(default)]
    skew: SignedDurRange,
    #[serde(default)]
    drift_ppm: f64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WorkloadFile {
    rate: Option<Rate>,
    clients: Option<u32>,
    think: Option<DurRange>,
    timeout: Option<Dur>,
    requests: Option<u64>,
    #[serde(default)]
    start: Dur,
    stop: Option<Dur>,
    protocol: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockFile {
    from: Spanned<String>,
    to: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultFile {
    at: Spanned<Dur>,
    crash: Option<Spanned<String>>,
    restart_after: Option<Dur>,
    restart: Option<Spanned<String>>,
    partition: Option<Vec<Vec<Spanned<String>>>>,
    isolate: Option<Spanned<String>>,
    block: Option<BlockFile>,
    heal_after: Option<Dur>,
    clock_jump: Option<Spanned<String>>,
    by: Option<SignedDur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RandomFaultsFile {
    #[serde(default)]
    crash_rate: Rate,
    restart_after: Option<DurRange>,
    #[serde(default)]
    partition_rate: Rate,
    partition_duration: Option<DurRange>,
    #[serde(default)]
    clock_jump_rate: Rate,
    clock_jump: Option<SignedDurRange>,
}

/// Network behaviour of one directed link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkParams {
    pub latency: DurRange,
    pub drop: f64,
    pub duplicate: f64,
}

/// Each node's clock: offset drawn from `skew`, rate error from `±drift_ppm`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockParams {
    pub skew: SignedDurRange,
    pub drift_ppm: f64,
}

/// External requests arriving as a Poisson process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Workload {
    /// Open loop: requests from [`Model::request`] arriving at this rate (zero when the
    /// workload is closed loop).
    pub rate: Rate,
    /// Closed loop: the model's stateful clients ([`Model::client`]).
    pub clients: Option<ClosedLoop>,
    pub requests: Option<u64>,
    pub start_ns: u64,
    pub stop_ns: Option<u64>,
    /// What the workload's clients speak: framed JSON (the default) or HTTP through the
    /// model's [`Model::http`] mapping, recorded with each request and answer.
    pub protocol: Protocol,
}

/// A closed-loop workload: `clients` clients, each making one request at a time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClosedLoop {
    pub clients: u32,
    /// Between an answer (or a timeout) and the client's next request, uniformly drawn.
    pub think: DurRange,
    /// How long a client waits for an answer before it is told of a timeout.
    pub timeout_ns: u64,
}

/// The default wait for an answer in a closed-loop workload.
pub const DEFAULT_CLIENT_TIMEOUT_NS: u64 = 1_000_000_000;

/// One planned fault, with node names resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultAction {
    Crash {
        node: NodeId,
        restart_after_ns: Option<u64>,
    },
    Restart {
        node: NodeId,
    },
    /// Cut every listed directed link, and restore them after `heal_after_ns` if given.
    Cut {
        links: Vec<(NodeId, NodeId)>,
        heal_after_ns: Option<u64>,
    },
    ClockJump {
        node: NodeId,
        by_ns: i64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlannedFault {
    pub at_ns: u64,
    pub action: FaultAction,
}

/// Rates of faults drawn at random from the seed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomFaults {
    /// Per node.
    pub crash_rate: Rate,
    pub restart_after: DurRange,
    pub partition_rate: Rate,
    pub partition_duration: DurRange,
    /// Per node.
    pub clock_jump_rate: Rate,
    pub clock_jump: SignedDurRange,
}

/// A black-box service the nodes call (`[services.NAME]`; see [`crate::service`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceSpec {
    /// What node code connects to (`ctx.connect("cache", …)`).
    pub name: String,
    /// Where the real runtime connects. `None`: the service has no address, and connecting
    /// to it in the real runtime is refused.
    pub address: Option<std::net::SocketAddr>,
    /// The simulator's one-way latency between a node and the service (the network's by
    /// default).
    pub latency: DurRange,
    /// The simulator's faults, per write: the connection is reset, the service stops
    /// answering on the connection (it hangs), the service crashes (its state is lost and
    /// every connection to it closes).
    pub reset: f64,
    pub hang: f64,
    pub crash: f64,
}

/// The services a scenario's text declares (`[services.NAME]`), in the order a parsed
/// scenario lists them (by name); none when the text does not parse. For tools that show a
/// trace's services without its model (the TUI's lanes, the exports' tracks).
pub fn service_names(source: &str) -> Vec<String> {
    let Ok(table) = source.parse::<toml::Table>() else {
        return Vec::new();
    };
    match table.get("services") {
        Some(toml::Value::Table(services)) => {
            let mut names: Vec<String> = services.keys().take(SERVICES_MAX).cloned().collect();
            names.sort();
            names
        }
        _ => Vec::new(),
    }
}

/// At most this many services a scenario may declare.
pub const SERVICES_MAX: usize = 64;

/// A parsed and validated scenario for model options `O`.
#[derive(Clone, Debug)]
pub struct Scenario<O> {
    /// How the scenario was named (its path), for messages.
    pub name: String,
    /// The file's text, stored in trace headers.
    pub source: String,
    pub model: String,
    pub description: String,
    pub seed: u64,
    pub time_limit_ns: u64,
    pub max_events: u64,
    pub swarm: bool,
    pub options: O,
    pub nodes: Vec<NodeSpec>,
    pub network: LinkParams,
    /// Per-link overrides: (from, to, params).
    pub links: Vec<(NodeId, NodeId, LinkParams)>,
    pub clocks: ClockParams,
    pub workload: Option<Workload>,
    pub faults: Vec<PlannedFault>,
    pub random_faults: RandomFaults,
    /// The services nodes call, in name order.
    pub services: Vec<ServiceSpec>,
}

/// The default time limit when a scenario gives none.
pub const DEFAULT_TIME_LIMIT_NS: u64 = 10_000_000_000;
/// The default bound on the number of steps, so that no run loops forever.
pub const DEFAULT_MAX_EVENTS: u64 = 50_000_000;

impl<O> Scenario<O> {
    /// The id of the node named `name`.
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .map(|i| NodeId(i as u32))
    }

    /// The parameters of the directed link `from -> to`.
    pub fn link(&self, from: NodeId, to: NodeId) -> LinkParams {
        self.links
            .iter()
            .rev()
            .find(|(f, t, _)| *f == from && *t == to)
            .map_or(self.network, |(_, _, p)| *p)
    }
}

/// Parses and validates a scenario for model `M`. `file` names the source in errors.
pub fn parse<M: Model>(file: &str, source: &str) -> Result<Scenario<M::Options>, ScenarioError> {
    let name = model_name(file, source)?;
    if name != M::NAME {
        return Err(ScenarioError::at_key(
            file,
            source,
            "",
            "model",
            format!("scenario is for model `{name}`, not `{}`", M::NAME),
        ));
    }
    let f: File<M::Options> = toml::from_str(source).map_err(|e| toml_error(file, source, &e))?;
    M::validate(&f.model_options)
        .map_err(|e| ScenarioError::at_key(file, source, "model_options", &e.field, e.message))?;
    let nodes = M::nodes(&f.model_options);
    let at_options =
        |message: String| ScenarioError::at_key(file, source, "", "model_options", message);
    if nodes.is_empty() || nodes.len() > limits::MAX_NODES {
        return Err(at_options(format!(
            "these options make a cluster of {} nodes; a cluster has 1 to {}",
            nodes.len(),
            limits::MAX_NODES
        )));
    }
    if let Some(long) = nodes
        .iter()
        .find(|n| n.name.len() > limits::MAX_NAME_BYTES || n.role.len() > limits::MAX_NAME_BYTES)
    {
        return Err(at_options(format!(
            "node name or role longer than {} bytes: `{:.40}…`",
            limits::MAX_NAME_BYTES,
            long.name
        )));
    }
    let resolve = |s: &Spanned<String>| -> Result<NodeId, ScenarioError> {
        nodes
            .iter()
            .position(|n| &n.name == s.get_ref())
            .map(|i| NodeId(i as u32))
            .ok_or_else(|| {
                let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
                ScenarioError::at_offset(
                    file,
                    source,
                    s.span().start,
                    format!(
                        "unknown node `{}`; this cluster has {}",
                        s.get_ref(),
                        names.join(", ")
                    ),
                )
            })
    };

    let latency = f.network.latency.unwrap_or(DurRange {
        lo_ns: 1_000_000,
        hi_ns: 1_000_000,
    });
    let network = LinkParams {
        latency,
        drop: f.network.drop.0,
        duplicate: f.network.duplicate.0,
    };
    let mut links = Vec::new();
    for l in &f.network.link {
        let (from, to) = (resolve(&l.from)?, resolve(&l.to)?);
        let params = LinkParams {
            latency: l.latency.unwrap_or(network.latency),
            drop: l.drop.map_or(network.drop, |p| p.0),
            duplicate: l.duplicate.map_or(network.duplicate, |p| p.0),
        };
        links.push((from, to, params));
        if l.both_ways {
            links.push((to, from, params));
        }
    }

    if !(f.clocks.drift_ppm.is_finite() && (0.0..=1e5).contains(&f.clocks.drift_ppm)) {
        return Err(ScenarioError::at_key(
            file,
            source,
            "clocks",
            "drift_ppm",
            "must be between 0 and 100000",
        ));
    }

    let time_limit_ns = f.time_limit.map_or(DEFAULT_TIME_LIMIT_NS, |d| d.0);
    if time_limit_ns == 0 {
        return Err(ScenarioError::at_key(
            file,
            source,
            "",
            "time_limit",
            "must be longer than 0s",
        ));
    }
    let max_events = f.max_events.unwrap_or(DEFAULT_MAX_EVENTS);
    if max_events == 0 {
        return Err(ScenarioError::at_key(
            file,
            source,
            "",
            "max_events",
            "must be at least 1",
        ));
    }

    let workload = workload::<M>(file, source, &f.workload, &f.model_options)?;

    let mut faults = Vec::new();
    for fault in &f.faults {
        faults.push(resolve_fault(file, source, fault, &nodes, &resolve)?);
    }
    faults.sort_by_key(|p| p.at_ns);

    let r = &f.random_faults;
    let random_faults = RandomFaults {
        crash_rate: r.crash_rate,
        restart_after: r.restart_after.unwrap_or(DurRange {
            lo_ns: 100_000_000,
            hi_ns: 1_000_000_000,
        }),
        partition_rate: r.partition_rate,
        partition_duration: r.partition_duration.unwrap_or(DurRange {
            lo_ns: 100_000_000,
            hi_ns: 1_000_000_000,
        }),
        clock_jump_rate: r.clock_jump_rate,
        clock_jump: r.clock_jump.unwrap_or(SignedDurRange {
            lo_ns: -100_000_000,
            hi_ns: 100_000_000,
        }),
    };

    let services = services::<M>(file, source, &f.services, &f.model_options, network.latency)?;

    Ok(Scenario {
        name: file.to_string(),
        source: source.to_string(),
        model: name,
        description: f.description,
        seed: f.seed,
        time_limit_ns,
        max_events,
        swarm: f.swarm,
        options: f.model_options,
        nodes,
        network,
        links,
        clocks: ClockParams {
            skew: f.clocks.skew,
            drift_ppm: f.clocks.drift_ppm,
        },
        workload,
        faults,
        random_faults,
        services,
    })
}

/// The `[services.NAME]` tables: each name bounded, its address an IP address and port, and
/// a simulation of it in the model (so every scenario runs in the simulator).
fn services<M: Model>(
    file: &str,
    source: &str,
    tables: &std::collections::BTreeMap<String, ServiceFile>,
    options: &M::Options,
    latency: DurRange,
) -> Result<Vec<ServiceSpec>, ScenarioError> {
    if tables.len() > SERVICES_MAX {
        return Err(ScenarioError::whole_file(
            file,
            format!(
                "{} services; a scenario declares at most {SERVICES_MAX}",
                tables.len()
            ),
        ));
    }
    let mut specs = Vec::with_capacity(tables.len());
    for (name, t) in tables {
        let table = format!("services.{name}");
        if name.is_empty() || name.len() > limits::MAX_NAME_BYTES {
            return Err(ScenarioError::at_key(
                file,
                source,
                "",
                &table,
                format!("a service's name has 1 to {} bytes", limits::MAX_NAME_BYTES),
            ));
        }
        if M::service(options, name).is_none() {
            return Err(ScenarioError::at_key(
                file,
                source,
                &table,
                "",
                format!(
                    "model `{}` has no simulation of a service named `{name}`",
                    M::NAME
                ),
            ));
        }
        let address = match &t.address {
            None => None,
            Some(text) => Some(text.get_ref().parse().map_err(|_| {
                ScenarioError::at_offset(
                    file,
                    source,
                    text.span().start,
                    format!(
                        "`{}` is not an address: use an IP address and a port, as \"127.0.0.1:6379\"",
                        text.get_ref()
                    ),
                )
            })?),
        };
        specs.push(ServiceSpec {
            name: name.clone(),
            address,
            latency: t.latency.unwrap_or(latency),
            reset: t.reset.0,
            hang: t.hang.0,
            crash: t.crash.0,
        });
    }
    Ok(specs)
}

/// The `[workload]` table: open loop (`rate`) or closed loop (`clients`), not both.
fn workload<M: Model>(
    file: &str,
    source: &str,
    w: &WorkloadFile,
    options: &M::Options,
) -> Result<Option<Workload>, ScenarioError> {
    let at =
        |key: &str, message: String| ScenarioError::at_key(file, source, "workload", key, message);
    let clients = match (w.rate, w.clients) {
        (Some(_), Some(_)) => {
            return Err(at(
                "clients",
                "is a closed-loop workload; `rate` is an open-loop one: give one of them".into(),
            ))
        }
        (None, None) => {
            for (key, given) in [
                ("requests", w.requests.is_some()),
                ("protocol", w.protocol.is_some()),
                ("think", w.think.is_some()),
                ("timeout", w.timeout.is_some()),
                ("stop", w.stop.is_some()),
            ] {
                if given {
                    return Err(at(key, "needs a `rate` or `clients` beside it".into()));
                }
            }
            return Ok(None);
        }
        (Some(_), None) => {
            for (key, given) in [
                ("think", w.think.is_some()),
                ("timeout", w.timeout.is_some()),
            ] {
                if given {
                    return Err(at(
                        key,
                        "is for closed-loop clients (`clients = N`), not a `rate`".into(),
                    ));
                }
            }
            None
        }
        (None, Some(clients)) => {
            if !(1..=limits::MAX_CLIENTS).contains(&clients) {
                return Err(at(
                    "clients",
                    format!("must be between 1 and {}", limits::MAX_CLIENTS),
                ));
            }
            if M::client(options, 0).is_none() {
                return Err(at(
                    "clients",
                    format!(
                        "model `{}` has no stateful client (`Model::client`); use `rate`",
                        M::NAME
                    ),
                ));
            }
            let timeout_ns = w.timeout.map_or(DEFAULT_CLIENT_TIMEOUT_NS, |d| d.0);
            if timeout_ns == 0 {
                return Err(at("timeout", "must be longer than 0s".into()));
            }
            Some(ClosedLoop {
                clients,
                think: w.think.unwrap_or(DurRange::fixed(0)),
                timeout_ns,
            })
        }
    };
    let protocol = match &w.protocol {
        None => Protocol::Framed,
        Some(text) => Protocol::parse(text).ok_or_else(|| {
            at(
                "protocol",
                format!("`{text}` is not a protocol: use \"framed\" or \"http\""),
            )
        })?,
    };
    Ok(Some(Workload {
        protocol,
        rate: w.rate.unwrap_or_default(),
        clients,
        requests: w.requests,
        start_ns: w.start.0,
        stop_ns: w.stop.map(|d| d.0),
    }))
}

fn resolve_fault(
    file: &str,
    source: &str,
    f: &FaultFile,
    nodes: &[NodeSpec],
    resolve: &dyn Fn(&Spanned<String>) -> Result<NodeId, ScenarioError>,
) -> Result<PlannedFault, ScenarioError> {
    let at = |message: String| ScenarioError::at_offset(file, source, f.at.span().start, message);
    let actions = [
        f.crash.is_some(),
        f.restart.is_some(),
        f.partition.is_some(),
        f.isolate.is_some(),
        f.block.is_some(),
        f.clock_jump.is_some(),
    ];
    let count = actions.iter().filter(|&&a| a).count();
    if count != 1 {
        return Err(at(format!(
            "a fault needs exactly one of `crash`, `restart`, `partition`, `isolate`, `block`, `clock_jump`; this one has {count}"
        )));
    }
    if f.restart_after.is_some() && f.crash.is_none() {
        return Err(at("`restart_after` goes only with `crash`".into()));
    }
    let cuts = f.partition.is_some() || f.isolate.is_some() || f.block.is_some();
    if f.heal_after.is_some() && !cuts {
        return Err(at(
            "`heal_after` goes only with `partition`, `isolate` or `block`".into(),
        ));
    }
    if f.by.is_some() != f.clock_jump.is_some() {
        return Err(at(
            "`clock_jump = NODE` and `by = DURATION` go together".into()
        ));
    }
    let heal_after_ns = f.heal_after.map(|d| d.0);
    let action = if let Some(node) = &f.crash {
        FaultAction::Crash {
            node: resolve(node)?,
            restart_after_ns: f.restart_after.map(|d| d.0),
        }
    } else if let Some(node) = &f.restart {
        FaultAction::Restart {
            node: resolve(node)?,
        }
    } else if let Some(groups) = &f.partition {
        // Nodes not named in any group form one more group together.
        let mut group_of = vec![usize::MAX; nodes.len()];
        for (g, members) in groups.iter().enumerate() {
            for m in members {
                let id = resolve(m)?;
                if group_of[id.index()] != usize::MAX {
                    return Err(ScenarioError::at_offset(
                        file,
                        source,
                        m.span().start,
                        format!("node `{}` is in two partition groups", m.get_ref()),
                    ));
                }
                group_of[id.index()] = g;
            }
        }
        FaultAction::Cut {
            links: links_between_groups(&group_of),
            heal_after_ns,
        }
    } else if let Some(node) = &f.isolate {
        let id = resolve(node)?;
        let group_of: Vec<usize> = (0..nodes.len())
            .map(|i| usize::from(i == id.index()))
            .collect();
        FaultAction::Cut {
            links: links_between_groups(&group_of),
            heal_after_ns,
        }
    } else if let Some(block) = &f.block {
        FaultAction::Cut {
            links: vec![(resolve(&block.from)?, resolve(&block.to)?)],
            heal_after_ns,
        }
    } else if let (Some(node), Some(by)) = (&f.clock_jump, f.by) {
        FaultAction::ClockJump {
            node: resolve(node)?,
            by_ns: by.0,
        }
    } else {
        unreachable!("exactly one action was checked above")
    };
    Ok(PlannedFault {
        at_ns: f.at.get_ref().0,
        action,
    })
}

/// Every directed link between nodes of different groups.
pub fn links_between_groups(group_of: &[usize]) -> Vec<(NodeId, NodeId)> {
    let mut links = Vec::new();
    for (a, ga) in group_of.iter().enumerate() {
        for (b, gb) in group_of.iter().enumerate() {
            if ga != gb {
                links.push((NodeId(a as u32), NodeId(b as u32)));
            }
        }
    }
    links
}
