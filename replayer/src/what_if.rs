//! What-if: a moment of a trace set up for changes by hand — a message in flight delivered
//! now, delayed, dropped or duplicated; a node crashed, restarted or isolated — and the
//! branch those changes make: a fork ([`crate::fork`]) whose future runs under the trace's
//! scenario. A branch is made exactly as `retrace fork TRACE --at N --schedule FILE` makes
//! it from the schedule file the branch saves ([`Branch::schedule_file`]), so a saved branch
//! is one anyone can make again.

use crate::engine::Replay;
use crate::fork::{boundary, default_seed, ForkWalk, ForkWalkError};
use retrace_sim::fuzz::{
    replay_case_from, ForkStart, ScheduleFile, ScheduleFrom, Start, Strategy, SCHEDULE_FORMAT,
};
use retrace_sim::schedule::Schedule;
use retrace_sim::{ForkFuture, ForkPoint, Intervention, Model, RunReport, Scenario, TraceSink};

/// A trace's moment, walked to once, from which branches are made.
pub struct Moment<M: Model> {
    /// The record picked: a branch keeps the trace up to the end of its step.
    pub at: u64,
    pub point: ForkPoint<M>,
    scenario: Scenario<M::Options>,
}

impl<M: Model> Moment<M> {
    /// Re-executes `replay` from its start to the end of record `at`'s step. From the
    /// start, not from a later state: a message in flight at the moment may have been sent
    /// long before it, and only its re-executed send holds its content.
    pub fn new(replay: &Replay<M>, at: u64) -> Result<Self, ForkWalkError> {
        let mut walk = ForkWalk::new(replay)?;
        walk.advance(boundary(replay, at))?;
        Ok(Moment {
            at,
            point: walk.point()?,
            scenario: walk.scenario().clone(),
        })
    }

    /// The seed a branch gets unless the user picks another: `retrace fork`'s default.
    pub fn default_seed(&self) -> u64 {
        default_seed(&self.point.header.origin, self.point.records)
    }

    /// The branch `changes` make at this moment of `replay` (the trace the moment was
    /// walked on), with `seed` for the future's random choices, run to the violation or
    /// the scenario's end.
    pub fn branch(
        &self,
        replay: &Replay<M>,
        seed: u64,
        changes: &[Intervention],
    ) -> Result<Branch, ForkWalkError> {
        let events = &replay.trace.events;
        let prefix = &events[..(self.point.records as usize).min(events.len())];
        let future = ForkFuture {
            interventions: changes.to_vec(),
            ..ForkFuture::default()
        };
        let start = ForkStart::new(&self.scenario, &self.point, prefix, future)
            .map_err(ForkWalkError::Fork)?;
        // The zero schedule decides nothing: the run is the fork's own, keyed as
        // `fork --schedule` keys it, so the saved file makes these bytes again.
        let mut report = replay_case_from(
            &Start::Fork(start),
            seed,
            Strategy::Random,
            &Schedule::default(),
            TraceSink::Memory,
        );
        let bytes = report.trace.take().unwrap_or_default();
        Ok(Branch {
            bytes,
            report,
            model: M::NAME,
            at: self.at,
            seed,
            changes: changes.to_vec(),
        })
    }
}

/// A branch run: its trace and what became of it.
pub struct Branch {
    /// The branch's trace, whole: the parent's records to the moment, then the future.
    pub bytes: Vec<u8>,
    pub report: RunReport,
    model: &'static str,
    at: u64,
    seed: u64,
    changes: Vec<Intervention>,
}

impl Branch {
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The parent's record it branched after.
    pub fn at(&self) -> u64 {
        self.at
    }

    /// The changes made at the moment, in order.
    pub fn changes(&self) -> &[Intervention] {
        &self.changes
    }

    /// The schedule file that makes this branch again from `parent`, the file of the trace
    /// it branched from: `retrace fork PARENT --at N --schedule FILE`.
    pub fn schedule_file(&self, parent: &str) -> ScheduleFile {
        ScheduleFile {
            format: SCHEDULE_FORMAT,
            model: self.model.into(),
            scenario: parent.into(),
            seed: self.seed,
            strategy: Strategy::Random.name().into(),
            invariant: self
                .report
                .violation
                .as_ref()
                .map(|v| v.invariant.clone())
                .unwrap_or_default(),
            schedule: Schedule::default(),
            from: Some(ScheduleFrom {
                trace: parent.into(),
                at: self.at,
                interventions: self.changes.clone(),
            }),
        }
    }
}
