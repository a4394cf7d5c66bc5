//! The model registry: how the CLI stays generic over systems. A user's own binary builds a
//! registry with its models and hands it to [`crate::cli::main_with`].

use retrace_recorder::launcher::{run_cluster, ClusterOptions};
use retrace_recorder::manifest::Manifest;
use retrace_recorder::verify::{verify_dir, VerifyReport};
use retrace_recorder::{run_node, NodeOptions, NodeSummary};
use retrace_sim::{
    check_determinism, codec, scenario, Model, Node, NodeSpec, RunReport, ScenarioError,
    Simulation, TraceDifference, TraceSink,
};
use std::marker::PhantomData;
use std::path::Path;

/// What the CLI needs to know about a scenario it ran.
#[derive(Clone, Debug)]
pub struct ScenarioInfo {
    pub name: String,
    pub model: String,
    pub description: String,
    pub seed: u64,
    pub time_limit_ns: u64,
    pub max_events: u64,
    pub nodes: Vec<NodeSpec>,
}

/// A model with its types erased, as the registry holds it.
pub trait ModelEntry: Send + Sync {
    fn name(&self) -> &'static str;
    fn about(&self) -> &'static str;
    /// Parses and validates a scenario for this model.
    fn check(
        &self,
        file: &str,
        source: &str,
        seed: Option<u64>,
    ) -> Result<ScenarioInfo, ScenarioError>;
    /// Runs a scenario (with `seed` overriding the file's).
    fn run(
        &self,
        file: &str,
        source: &str,
        seed: Option<u64>,
        sink: TraceSink,
    ) -> Result<RunReport, ScenarioError>;
    /// Renders an encoded message of this model for display (its `Debug` form).
    fn describe_message(&self, payload: &[u8]) -> String;
    /// The name of an encoded message's variant (the start of its `Debug` form), cheaply.
    fn message_name(&self, payload: &[u8]) -> String;
    /// Runs one node of the scenario as this process, until `stop` fires.
    fn node(
        &self,
        file: &str,
        source: &str,
        opts: &NodeOptions,
        stop: std::sync::mpsc::Receiver<()>,
    ) -> Result<NodeSummary, String>;
    /// Runs the scenario's cluster as processes, recording into `opts.dir`.
    fn cluster(&self, file: &str, source: &str, opts: &ClusterOptions) -> Result<Manifest, String>;
    /// Re-executes every node log of a recorded run.
    fn verify(&self, dir: &Path, file: &str, source: &str) -> Result<VerifyReport, String>;
    /// Searches the scenario's orderings and faults (see `retrace fuzz`).
    fn fuzz(
        &self,
        file: &str,
        source: &str,
        args: &crate::fuzz_cli::FuzzArgs,
    ) -> Result<u8, String>;
    /// Runs a scenario under a saved schedule (`retrace run --schedule`).
    fn run_schedule(
        &self,
        file: &str,
        source: &str,
        schedule: &retrace_sim::fuzz::ScheduleFile,
        sink: TraceSink,
    ) -> Result<RunReport, String>;
    /// Re-executes a trace of this model (see `retrace replay`).
    fn replay(
        &self,
        trace: retrace_sim::Trace,
        args: &crate::replay_cli::ReplayArgs,
    ) -> Result<crate::replay_cli::ReplayOutcome, String>;
    /// Opens a trace of this model for the TUI.
    fn session(&self, trace: retrace_sim::Trace) -> Result<Box<dyn retrace_tui::Session>, String>;
    /// Runs twice in memory and compares the traces.
    fn check_determinism(
        &self,
        file: &str,
        source: &str,
        seed: Option<u64>,
    ) -> Result<(RunReport, Option<TraceDifference>), ScenarioError>;
}

struct Entry<M>(PhantomData<fn() -> M>);

impl<M: Model> ModelEntry for Entry<M> {
    fn name(&self) -> &'static str {
        M::NAME
    }

    fn about(&self) -> &'static str {
        M::ABOUT
    }

    fn check(
        &self,
        file: &str,
        source: &str,
        seed: Option<u64>,
    ) -> Result<ScenarioInfo, ScenarioError> {
        let s = scenario::parse::<M>(file, source)?;
        Ok(ScenarioInfo {
            name: s.name.clone(),
            model: s.model.clone(),
            description: s.description.clone(),
            seed: seed.unwrap_or(s.seed),
            time_limit_ns: s.time_limit_ns,
            max_events: s.max_events,
            nodes: s.nodes.clone(),
        })
    }

    fn run(
        &self,
        file: &str,
        source: &str,
        seed: Option<u64>,
        sink: TraceSink,
    ) -> Result<RunReport, ScenarioError> {
        let s = scenario::parse::<M>(file, source)?;
        Ok(Simulation::<M>::new(&s, seed.unwrap_or(s.seed), sink).run())
    }

    fn node(
        &self,
        file: &str,
        source: &str,
        opts: &NodeOptions,
        stop: std::sync::mpsc::Receiver<()>,
    ) -> Result<NodeSummary, String> {
        let s = scenario::parse::<M>(file, source).map_err(|e| e.to_string())?;
        run_node::<M>(&s, opts, Some(stop)).map_err(|e| e.to_string())
    }

    fn cluster(&self, file: &str, source: &str, opts: &ClusterOptions) -> Result<Manifest, String> {
        let s = scenario::parse::<M>(file, source).map_err(|e| e.to_string())?;
        run_cluster::<M>(&s, opts)
    }

    fn verify(&self, dir: &Path, file: &str, source: &str) -> Result<VerifyReport, String> {
        let s = scenario::parse::<M>(file, source).map_err(|e| e.to_string())?;
        verify_dir::<M>(dir, &s)
    }

    fn fuzz(
        &self,
        file: &str,
        source: &str,
        args: &crate::fuzz_cli::FuzzArgs,
    ) -> Result<u8, String> {
        let s = scenario::parse::<M>(file, source).map_err(|e| e.to_string())?;
        crate::fuzz_cli::fuzz::<M>(file, &s, args)
    }

    fn run_schedule(
        &self,
        file: &str,
        source: &str,
        schedule: &retrace_sim::fuzz::ScheduleFile,
        sink: TraceSink,
    ) -> Result<RunReport, String> {
        let s = scenario::parse::<M>(file, source).map_err(|e| e.to_string())?;
        let strategy = retrace_sim::fuzz::Strategy::parse(&schedule.strategy)?;
        Ok(retrace_sim::fuzz::replay_case::<M>(
            &s,
            schedule.seed,
            strategy,
            &schedule.schedule,
            sink,
        ))
    }

    fn replay(
        &self,
        trace: retrace_sim::Trace,
        args: &crate::replay_cli::ReplayArgs,
    ) -> Result<crate::replay_cli::ReplayOutcome, String> {
        crate::replay_run::replay::<M>(trace, args)
    }

    fn session(&self, trace: retrace_sim::Trace) -> Result<Box<dyn retrace_tui::Session>, String> {
        let replay = retrace_replayer::Replay::<M>::new(trace).map_err(|e| e.to_string())?;
        Ok(Box::new(retrace_tui::ModelSession::new(replay)))
    }

    fn message_name(&self, payload: &[u8]) -> String {
        match codec::decode::<<M::Node as Node>::Msg>(payload) {
            Ok(msg) => debug_head(&msg),
            Err(_) => format!("<{} bytes>", payload.len()),
        }
    }

    fn describe_message(&self, payload: &[u8]) -> String {
        match codec::decode::<<M::Node as Node>::Msg>(payload) {
            Ok(msg) => format!("{msg:?}"),
            Err(e) => format!(
                "<{} bytes that do not decode as a {} message: {e}>",
                payload.len(),
                M::NAME
            ),
        }
    }

    fn check_determinism(
        &self,
        file: &str,
        source: &str,
        seed: Option<u64>,
    ) -> Result<(RunReport, Option<TraceDifference>), ScenarioError> {
        let s = scenario::parse::<M>(file, source)?;
        Ok(check_determinism::<M>(&s, seed.unwrap_or(s.seed)))
    }
}

/// The models a CLI knows, by name.
#[derive(Default)]
pub struct Registry {
    entries: Vec<Box<dyn ModelEntry>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// The models that ship with retrace: `pingpong`, `kv` and `webstack`.
    pub fn builtin() -> Self {
        Registry::new()
            .with::<retrace_models::PingPongModel>()
            .with::<retrace_models::KvModel>()
            .with::<retrace_models::WebstackModel>()
            .with::<retrace_models::RaftModel>()
            .with::<retrace_models::TwoPcModel>()
    }

    /// Adds a model; a later model with the same name replaces the earlier one.
    pub fn with<M: Model>(mut self) -> Self {
        self.entries.retain(|e| e.name() != M::NAME);
        self.entries.push(Box::new(Entry::<M>(PhantomData)));
        self
    }

    pub fn get(&self, name: &str) -> Option<&dyn ModelEntry> {
        self.entries
            .iter()
            .find(|e| e.name() == name)
            .map(|e| e.as_ref())
    }

    /// The registered models, sorted by name.
    pub fn entries(&self) -> Vec<&dyn ModelEntry> {
        let mut all: Vec<&dyn ModelEntry> = self.entries.iter().map(|e| e.as_ref()).collect();
        all.sort_by_key(|e| e.name());
        all
    }

    /// The model a scenario names, or an error that points at its `model` key.
    pub fn for_scenario(&self, file: &str, source: &str) -> Result<&dyn ModelEntry, ScenarioError> {
        let name = scenario::model_name(file, source)?;
        self.get(&name).ok_or_else(|| {
            let known: Vec<&str> = self.entries().iter().map(|e| e.name()).collect();
            ScenarioError::at_key(
                file,
                source,
                "",
                "model",
                format!("unknown model `{name}`; known models: {}", known.join(", ")),
            )
        })
    }
}

/// The head of a value's `Debug` form, up to its first space, brace or parenthesis (an
/// enum's variant, a struct's name), without formatting the rest: the writer stops the
/// formatter as soon as the head is complete.
fn debug_head(value: &dyn std::fmt::Debug) -> String {
    struct Head(String);
    impl std::fmt::Write for Head {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            match s.find([' ', '{', '(']) {
                Some(end) => {
                    self.0.push_str(&s[..end]);
                    Err(std::fmt::Error)
                }
                None => {
                    self.0.push_str(s);
                    if self.0.len() > 64 {
                        Err(std::fmt::Error)
                    } else {
                        Ok(())
                    }
                }
            }
        }
    }
    let mut head = Head(String::new());
    let _ = std::fmt::write(&mut head, format_args!("{value:?}"));
    head.0
}
