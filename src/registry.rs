//! The model registry: how the CLI stays generic over systems. A user's own binary builds a
//! registry with its models and hands it to [`crate::cli::main_with`].
//!
//! The registry is a list of model *types* ([`With`]`<M, …>` ending in [`Nil`]), so it can
//! call a generic function with the model a name picks: a command is one `fn cmd<M:
//! Model>(…)` wrapped in a [`ModelFn`] (or a [`ScenarioFn`], which gets the scenario parsed
//! once), and [`Registry::call`] finds the model. Adding a command touches no shared trait.

use anyhow::anyhow;
use retrace_sim::{
    check_determinism, codec, scenario, Model, Node, NodeSpec, RunReport, Scenario, ScenarioError,
    Simulation, Trace, TraceDifference, TraceSink,
};
use std::marker::PhantomData;

/// A function generic over the model, called once the registry knows which.
pub trait ModelFn {
    type Out;
    fn call<M: Model>(self) -> Self::Out;
}

/// A command on a scenario file: called with the model the scenario names and the scenario
/// parsed for it (once).
pub trait ScenarioFn {
    type Out;
    fn call<M: Model>(
        self,
        file: &str,
        scenario: Scenario<M::Options>,
    ) -> anyhow::Result<Self::Out>;
}

/// A list of model types.
pub trait Models: Send + Sync + 'static {
    /// Calls `f` with the model named `name` (the latest added wins); gives `f` back when
    /// no model has that name.
    fn dispatch<F: ModelFn>(&self, name: &str, f: F) -> Result<F::Out, F>;
    /// Every model's name and description, in the order they were added.
    fn list(&self, out: &mut Vec<(&'static str, &'static str)>);
}

/// The empty list.
pub struct Nil;

/// `M`, then the models of `R`.
pub struct With<M, R>(PhantomData<fn() -> M>, R);

impl Models for Nil {
    fn dispatch<F: ModelFn>(&self, _: &str, f: F) -> Result<F::Out, F> {
        Err(f)
    }
    fn list(&self, _: &mut Vec<(&'static str, &'static str)>) {}
}

impl<M: Model, R: Models> Models for With<M, R> {
    fn dispatch<F: ModelFn>(&self, name: &str, f: F) -> Result<F::Out, F> {
        if name == M::NAME {
            Ok(f.call::<M>())
        } else {
            self.1.dispatch(name, f)
        }
    }
    fn list(&self, out: &mut Vec<(&'static str, &'static str)>) {
        self.1.list(out);
        if let Some(k) = out.iter().position(|(n, _)| *n == M::NAME) {
            out.remove(k);
        }
        out.push((M::NAME, M::ABOUT));
    }
}

/// The models that ship with retrace.
pub type Builtin = With<
    retrace_models::WebcacheModel,
    With<
        retrace_models::QuorumModel,
        With<
            retrace_models::LockModel,
            With<
                retrace_models::TwoPcModel,
                With<
                    retrace_models::RaftModel,
                    With<
                        retrace_models::WebstackModel,
                        With<retrace_models::KvModel, With<retrace_models::PingPongModel, Nil>>,
                    >,
                >,
            >,
        >,
    >,
>;

/// The models a CLI knows, by name.
pub struct Registry<L: Models = Builtin> {
    models: L,
}

impl Registry<Nil> {
    /// An empty registry.
    pub fn new() -> Self {
        Registry { models: Nil }
    }
}

impl Default for Registry<Nil> {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// The models that ship with retrace: pingpong, kv, webstack, raft, twopc, lockserv,
    /// quorum and webcache.
    pub fn builtin() -> Self {
        Registry::new()
            .with::<retrace_models::PingPongModel>()
            .with::<retrace_models::KvModel>()
            .with::<retrace_models::WebstackModel>()
            .with::<retrace_models::RaftModel>()
            .with::<retrace_models::TwoPcModel>()
            .with::<retrace_models::LockModel>()
            .with::<retrace_models::QuorumModel>()
            .with::<retrace_models::WebcacheModel>()
    }
}

/// What the CLI says about a scenario it runs.
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

impl ScenarioInfo {
    /// Of a parsed scenario, run with `seed` (the file's when `None`).
    pub fn of<O>(s: &Scenario<O>, seed: Option<u64>) -> ScenarioInfo {
        ScenarioInfo {
            name: s.name.clone(),
            model: s.model.clone(),
            description: s.description.clone(),
            seed: seed.unwrap_or(s.seed),
            time_limit_ns: s.time_limit_ns,
            max_events: s.max_events,
            nodes: s.nodes.clone(),
        }
    }
}

/// How to show a model's encoded messages: its variant's name, or all of it.
#[derive(Clone, Copy)]
pub struct Messages {
    pub name: fn(&[u8]) -> String,
    pub text: fn(&[u8]) -> String,
    /// A timer's value from its tag (`Node::Timer`).
    pub timer: fn(&[u8]) -> String,
    /// Bytes to or from a service (`Model::show_service_bytes`).
    pub service: fn(&[u8]) -> String,
}

impl retrace_replayer::Describe for Messages {
    fn message(&self, payload: &[u8]) -> String {
        (self.text)(payload)
    }
    fn timer(&self, tag: &[u8]) -> String {
        (self.timer)(tag)
    }
    fn service_bytes(&self, bytes: &[u8]) -> String {
        (self.service)(bytes)
    }
}

impl Messages {
    /// For a trace of a model this binary does not know: sizes.
    pub fn unknown() -> Messages {
        Messages {
            name: |p| format!("message ({} bytes)", p.len()),
            text: |p| format!("<{} bytes>", p.len()),
            timer: retrace_replayer::describe::timer_without_model,
            service: |b| retrace_sim::http::show_bytes(b, 120),
        }
    }

    fn of<M: Model>() -> Messages {
        Messages {
            name: |p| match codec::decode::<<M::Node as Node>::Msg>(p) {
                Ok(msg) => debug_head(&msg),
                Err(_) => format!("<{} bytes>", p.len()),
            },
            text: |p| match codec::decode::<<M::Node as Node>::Msg>(p) {
                Ok(msg) => format!("{msg:?}"),
                Err(e) => format!(
                    "<{} bytes that do not decode as a {} message: {e}>",
                    p.len(),
                    M::NAME
                ),
            },
            timer: |t| match codec::decode::<<M::Node as Node>::Timer>(t) {
                Ok(timer) => format!("{timer:?}"),
                Err(_) => retrace_replayer::describe::timer_without_model(t),
            },
            service: |b| {
                M::show_service_bytes(b).unwrap_or_else(|| retrace_sim::http::show_bytes(b, 120))
            },
        }
    }
}

impl<L: Models> Registry<L> {
    /// Adds a model; a later model with the same name replaces the earlier one.
    pub fn with<M: Model>(self) -> Registry<With<M, L>> {
        Registry {
            models: With(PhantomData, self.models),
        }
    }

    /// Calls `f` with the model named `name`.
    pub fn call<F: ModelFn>(&self, name: &str, f: F) -> anyhow::Result<F::Out> {
        self.models.dispatch(name, f).map_err(|_| {
            anyhow!(
                "model `{name}` is not known to this binary (it knows {})",
                self.names().join(", ")
            )
        })
    }

    /// The registered models' names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.models().into_iter().map(|(n, _)| n).collect()
    }

    /// The registered models' names and descriptions, sorted by name.
    pub fn models(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        self.models.list(&mut out);
        out.sort();
        out
    }

    /// The model a scenario names, or an error that points at its `model` key.
    pub fn model_of(&self, file: &str, source: &str) -> Result<&'static str, ScenarioError> {
        let name = scenario::model_name(file, source)?;
        self.names()
            .into_iter()
            .find(|n| *n == name)
            .ok_or_else(|| {
                ScenarioError::at_key(
                    file,
                    source,
                    "",
                    "model",
                    format!(
                        "unknown model `{name}`; known models: {}",
                        self.names().join(", ")
                    ),
                )
            })
    }

    /// Runs `f` on a scenario's text: finds its model, parses it once, calls `f`.
    pub fn on_scenario<F: ScenarioFn>(
        &self,
        file: &str,
        source: &str,
        f: F,
    ) -> anyhow::Result<F::Out> {
        struct Parse<'a, F> {
            file: &'a str,
            source: &'a str,
            f: F,
        }
        impl<F: ScenarioFn> ModelFn for Parse<'_, F> {
            type Out = anyhow::Result<F::Out>;
            fn call<M: Model>(self) -> Self::Out {
                let s = scenario::parse::<M>(self.file, self.source).map_err(anyhow::Error::msg)?;
                self.f.call::<M>(self.file, s)
            }
        }
        let model = self.model_of(file, source).map_err(anyhow::Error::msg)?;
        self.call(model, Parse { file, source, f })?
    }

    /// What a scenario is, as the run summary shows it.
    pub fn scenario_info(
        &self,
        file: &str,
        source: &str,
        seed: Option<u64>,
    ) -> anyhow::Result<ScenarioInfo> {
        struct Info(Option<u64>);
        impl ScenarioFn for Info {
            type Out = ScenarioInfo;
            fn call<M: Model>(
                self,
                _: &str,
                s: Scenario<M::Options>,
            ) -> anyhow::Result<ScenarioInfo> {
                Ok(ScenarioInfo::of(&s, self.0))
            }
        }
        self.on_scenario(file, source, Info(seed))
    }

    /// Simulates a scenario (with `seed` overriding the file's).
    pub fn simulate(
        &self,
        file: &str,
        source: &str,
        seed: Option<u64>,
        sink: TraceSink,
    ) -> anyhow::Result<RunReport> {
        struct Simulate(Option<u64>, TraceSink);
        impl ScenarioFn for Simulate {
            type Out = RunReport;
            fn call<M: Model>(self, _: &str, s: Scenario<M::Options>) -> anyhow::Result<RunReport> {
                Ok(Simulation::<M>::new(&s, self.0.unwrap_or(s.seed), self.1).run())
            }
        }
        self.on_scenario(file, source, Simulate(seed, sink))
    }

    /// Runs a scenario twice in memory and compares the traces.
    pub fn check_determinism(
        &self,
        file: &str,
        source: &str,
        seed: Option<u64>,
    ) -> anyhow::Result<(RunReport, Option<TraceDifference>)> {
        struct Twice(Option<u64>);
        impl ScenarioFn for Twice {
            type Out = (RunReport, Option<TraceDifference>);
            fn call<M: Model>(self, _: &str, s: Scenario<M::Options>) -> anyhow::Result<Self::Out> {
                Ok(check_determinism::<M>(&s, self.0.unwrap_or(s.seed)))
            }
        }
        self.on_scenario(file, source, Twice(seed))
    }

    /// Opens a trace for the TUI (or any use of a [`retrace_tui::Session`]).
    pub fn session(&self, trace: Trace) -> anyhow::Result<Box<dyn retrace_tui::Session>> {
        struct Open(Trace);
        impl ModelFn for Open {
            type Out = anyhow::Result<Box<dyn retrace_tui::Session>>;
            fn call<M: Model>(self) -> Self::Out {
                let replay =
                    retrace_replayer::Replay::<M>::new(self.0).map_err(anyhow::Error::msg)?;
                Ok(Box::new(retrace_tui::ModelSession::new(replay)))
            }
        }
        let model = trace.header.model.clone();
        self.call(&model, Open(trace))?
    }

    /// How to show the messages of model `name` (sizes when this binary does not know it).
    pub fn messages(&self, name: &str) -> Messages {
        struct Of;
        impl ModelFn for Of {
            type Out = Messages;
            fn call<M: Model>(self) -> Messages {
                Messages::of::<M>()
            }
        }
        self.models
            .dispatch(name, Of)
            .unwrap_or_else(|_| Messages::unknown())
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
