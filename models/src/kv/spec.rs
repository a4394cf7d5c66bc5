//! kv as clients should see it: one register per key, every operation taking effect at one
//! instant between its request and its answer (linearizability).

use super::msg::{Msg, Op, OpResult};
use retrace_sim::linearizability::{Observed, Spec};

/// The value of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Register(Option<String>);

/// What an operation returns: a put's "ok", or the value a get read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Returns {
    Stored,
    Read(Option<String>),
}

impl Spec for Register {
    type Msg = Msg;
    type Ret = Returns;

    fn partition(input: &Msg) -> Option<String> {
        match input {
            Msg::Op(op) => Some(op.key().to_string()),
            _ => None,
        }
    }

    fn apply(&mut self, input: &Msg) -> Returns {
        match input {
            Msg::Op(Op::Put { value, .. }) => {
                self.0 = Some(value.clone());
                Returns::Stored
            }
            _ => Returns::Read(self.0.clone()),
        }
    }

    fn observe(output: &Msg) -> Observed<Returns> {
        match output {
            Msg::Done(OpResult::PutOk { .. }) => Observed::Returned(Returns::Stored),
            Msg::Done(OpResult::GetOk { entry }) => {
                Observed::Returned(Returns::Read(entry.as_ref().map(|e| e.value.clone())))
            }
            Msg::Done(OpResult::Refused { .. }) => Observed::Failed,
            // The client gave up: the put may have happened.
            _ => Observed::Unknown,
        }
    }

    fn describe(input: &Msg, output: Option<&Msg>) -> String {
        let op = match input {
            Msg::Op(Op::Put { key, value }) => format!("put {key} = {value}"),
            Msg::Op(Op::Get { key }) => format!("get {key}"),
            other => format!("{other:?}"),
        };
        let result = match output {
            None => "?".to_string(),
            Some(Msg::Done(OpResult::PutOk { .. })) => "ok".to_string(),
            Some(Msg::Done(OpResult::GetOk { entry: None })) => "nothing".to_string(),
            Some(Msg::Done(OpResult::GetOk { entry: Some(e) })) => e.value.clone(),
            Some(Msg::Done(OpResult::Failed { .. })) => "gave up".to_string(),
            Some(other) => format!("{other:?}"),
        };
        format!("{op} -> {result}")
    }
}
