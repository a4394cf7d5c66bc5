//! When did a failure become inevitable? For moments before a trace's violation, fork many
//! futures with different seeds ([`crate::fork`]) and count how often the same invariant
//! breaks: the curve of that probability against time, and the moment where it went from
//! unlikely to near-certain, named by the step that happened there.
//!
//! Moments are the gaps between steps (moment `j` is right before step `j`). A coarse grid
//! comes first; then the gap between two measured moments whose probabilities differ most
//! is halved, again and again, so the samples gather where the answer changes and the
//! turn is pinned to one step when the budget allows. Futures keep the scenario's network,
//! workload and random faults but not its scripted faults: a scripted fault that happened
//! is a step of the trace — one the curve can name —, and one still to come would make
//! every earlier moment look doomed.

use crate::engine::Replay;
use crate::fork::{ForkWalk, ForkWalkError};
use retrace_sim::rng::{derive_seed, Purpose};
use retrace_sim::trace::Record;
use retrace_sim::{format_ns, ForkFuture, Model, Simulation, TraceSink};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::mpsc;

/// The violation a curve is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub invariant: String,
    /// The step that broke it (its index among the trace's steps).
    pub step: usize,
    /// Its input's trace index and time.
    pub index: u64,
    pub time_ns: u64,
}

/// The first violation in `replay`: from the trace's own violation record (a simulated
/// run's), or by re-executing it (a recording's has none).
pub fn find_target<M: Model>(replay: &Replay<M>) -> Result<Option<Target>, ForkWalkError> {
    let events = &replay.trace.events;
    let target = |step: usize, invariant: String| {
        let s = &replay.steps.steps[step];
        Target {
            invariant,
            step,
            index: s.input as u64,
            time_ns: s.time_ns,
        }
    };
    for e in events {
        if let Record::Violation {
            step: index,
            invariant,
            ..
        } = &e.record
        {
            if let Some(step) = replay.steps.step_of.get(*index as usize).copied().flatten() {
                if step < replay.steps.len() {
                    return Ok(Some(target(step, invariant.clone())));
                }
            }
        }
    }
    let mut cluster = replay.initial();
    while cluster.applied < replay.steps.len() {
        let step = cluster.applied;
        let broken = replay
            .apply(&mut cluster)
            .map_err(ForkWalkError::Diverged)?;
        if let Some(v) = broken.into_iter().next() {
            return Ok(Some(target(step, v.invariant)));
        }
    }
    Ok(None)
}

/// How the curve is measured.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Futures per moment.
    pub samples: u32,
    /// Seeds of the futures come from this one.
    pub seed: u64,
    /// At most this many moments are measured.
    pub moments_max: usize,
    /// Each future runs until this long after the violation's time.
    pub horizon_ns: u64,
    /// Threads running futures.
    pub jobs: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            samples: 64,
            seed: 0,
            moments_max: 24,
            horizon_ns: 1_000_000_000,
            jobs: 2,
        }
    }
}

/// One measured moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Right before this step (0: before the first).
    pub moment: usize,
    /// The fork's first record there.
    pub boundary: u64,
    pub time_ns: u64,
    /// Futures that broke the invariant, of those run.
    pub broke: u32,
    pub samples: u32,
}

impl Point {
    pub fn probability(&self) -> f64 {
        if self.samples == 0 {
            return 0.0;
        }
        f64::from(self.broke) / f64::from(self.samples)
    }

    /// The 95% Wilson score interval of the probability: honest at 0 and 1 and for few
    /// samples, where the normal approximation is not.
    pub fn interval(&self) -> (f64, f64) {
        let n = f64::from(self.samples.max(1));
        let p = self.probability();
        let z = 1.96f64;
        let z2 = z * z;
        let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
        let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
        ((centre - half).max(0.0), (centre + half).min(1.0))
    }
}

/// What the curve's shape says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Unlikely for the last time at one moment, near-certain at a later one: see [`Turn`].
    Turn,
    /// It rises, but never from unlikely to near-certain: no one stretch decided it;
    /// [`Curve::rises`] are its largest steps up.
    Gradual,
    /// It barely changes, and stays high: the failure was near-certain from the first
    /// moment measured.
    FlatHigh,
    /// It barely changes, and stays low: even right before the violation, most futures
    /// escape it — the trace's own future was the unlucky one.
    FlatLow,
    /// It barely changes, somewhere in between.
    Flat,
}

/// Where the failure went from unlikely to near-certain: the last measured moment it was
/// unlikely, and the first after it that it was near-certain (indices into
/// [`Curve::points`]). When they are one step apart, that step decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Turn {
    pub unlikely: usize,
    pub certain: usize,
}

/// The measured curve and its reading.
#[derive(Clone, Debug)]
pub struct Curve {
    pub target: Target,
    /// In moment order.
    pub points: Vec<Point>,
    /// Futures run in all.
    pub forks: u64,
    pub shape: Shape,
    pub turn: Option<Turn>,
    /// The largest rises between neighbouring measured moments (indices into `points` of
    /// the moment after each), within the turn if there is one, in trace order: the steps
    /// that made the failure likelier, each between `points[i - 1]` and `points[i]`.
    pub rises: Vec<usize>,
    /// Where the trace's clock starts (a recording's is wall-clock).
    pub base_ns: u64,
}

impl Curve {
    /// The step the reading names first: the one that made the failure inevitable, or the
    /// first of the gap where it rose most (its index among the trace's steps).
    pub fn named_step(&self) -> Option<usize> {
        let p = |i: usize| self.points[i].probability();
        let gap = match self.turn {
            Some(t) if self.sharp() => Some(t.certain),
            _ => self.rises.iter().copied().max_by(|&a, &b| {
                (p(a) - p(a - 1))
                    .total_cmp(&(p(b) - p(b - 1)))
                    .then(b.cmp(&a))
            }),
        }?;
        Some(self.points[gap - 1].moment)
    }

    /// Whether one step decided it: the turn's two moments are neighbours.
    pub fn sharp(&self) -> bool {
        self.turn.is_some_and(|t| {
            t.certain == t.unlikely + 1
                && self.points[t.certain].moment == self.points[t.unlikely].moment + 1
        })
    }

    /// The curve as text: probability up, time across; `●` a measured moment, `│` its 95%
    /// interval, `▲` under the axis where the curve turned.
    pub fn chart(&self, width: usize, height: usize) -> String {
        let c = self;
        let width = width.max(8);
        let height = height.max(2);
        let t0 = c.points.first().map_or(0, |p| p.time_ns);
        let t1 = c.points.last().map_or(0, |p| p.time_ns).max(t0 + 1);
        let col =
            |ns: u64| ((ns - t0) as f64 / (t1 - t0) as f64 * (width - 1) as f64).round() as usize;
        let row = |p: f64| ((1.0 - p) * height as f64).round() as usize;
        let mut grid = vec![vec![' '; width]; height + 1];
        for p in &c.points {
            let x = col(p.time_ns).min(width - 1);
            let (lo, hi) = p.interval();
            for line in grid.iter_mut().take(row(lo) + 1).skip(row(hi)) {
                if line[x] == ' ' {
                    line[x] = '│';
                }
            }
        }
        for p in &c.points {
            let x = col(p.time_ns).min(width - 1);
            grid[row(p.probability()).min(height)][x] = '●';
        }
        let mut out = String::new();
        for (r, line) in grid.iter().enumerate() {
            let label = if r % (height / 2).max(1) == 0 {
                format!("{:>4.1}", 1.0 - r as f64 / height as f64)
            } else {
                "    ".to_string()
            };
            let _ = writeln!(
                out,
                "{label} ┤{}",
                line.iter().collect::<String>().trim_end()
            );
        }
        let _ = writeln!(out, "     └{}", "─".repeat(width));
        let marks: Vec<usize> = match c.turn {
            Some(t) if c.sharp() => vec![t.certain],
            _ => c.rises.clone(),
        };
        if !marks.is_empty() {
            let mut line = vec![' '; width];
            for i in marks {
                line[col(c.points[i].time_ns).min(width - 1)] = '▲';
            }
            let _ = writeln!(out, "      {}", line.iter().collect::<String>().trim_end());
        }
        let left = format_ns(t0.saturating_sub(c.base_ns));
        let right = format_ns(t1.saturating_sub(c.base_ns));
        let _ = writeln!(
            out,
            "      {left}{}{right}",
            " ".repeat(width.saturating_sub(left.len() + right.len()))
        );
        out
    }
}

/// A probability at most this is unlikely; at least [`CERTAIN`], near-certain.
const UNLIKELY: f64 = 0.25;
const CERTAIN: f64 = 0.75;
/// Rises smaller than this are within the noise of a few dozen samples.
const RISE_MIN: f64 = 0.1;
/// At most this many rises are named.
const RISES_MAX: usize = 3;
/// A curve whose highest and lowest points differ by less is flat.
const FLAT_SPREAD: f64 = 0.25;
/// Gaps whose ends differ by less are not worth halving.
const REFINE_DIFF: f64 = 0.1;
/// Moments measured on the first pass, evenly spread.
const GRID: usize = 9;

/// A moment's futures, run by one worker.
struct Job {
    moment: usize,
    boundary: usize,
    seeds: Vec<u64>,
}

/// Measures the curve for `target` (see the module's comment). `progress` hears each
/// moment measured, with the forks run so far.
pub fn curve<M: Model>(
    replay: &Replay<M>,
    target: &Target,
    settings: Settings,
    progress: &mut dyn FnMut(&Point, u64),
) -> Result<Curve, ForkWalkError> {
    let steps = &replay.steps.steps;
    let last = target.step.min(steps.len().saturating_sub(1));
    let boundary_of = |moment: usize| steps.get(moment).map_or(0, |s| s.input);
    let until_ns = target.time_ns.saturating_add(settings.horizon_ns);
    let future = ForkFuture {
        scripted_faults: false,
        until_ns: Some(until_ns),
        interventions: Vec::new(),
    };
    let jobs = settings.jobs.clamp(1, 64);
    let samples = settings.samples.max(1);
    let base_ns = if replay.origin.virtual_time() {
        0
    } else {
        replay.trace.events.first().map_or(0, |e| e.time_ns)
    };

    std::thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel::<Result<(usize, u32, u32), String>>();
        let mut job_txs = Vec::new();
        for _ in 0..jobs {
            let (tx, rx) = mpsc::channel::<Job>();
            job_txs.push(tx);
            let done = done_tx.clone();
            let invariant = target.invariant.clone();
            let future = &future;
            scope.spawn(move || {
                // Each worker keeps its own walks (node states are not shared across
                // threads), at every moment it measured: a later moment starts from the
                // nearest earlier one.
                let mut walks: BTreeMap<usize, ForkWalk<'_, M>> = BTreeMap::new();
                while let Ok(job) = rx.recv() {
                    let result = run_job(replay, &mut walks, &job, future, &invariant);
                    if done.send(result.map_err(|e| e.to_string())).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let mut measured: BTreeMap<usize, Point> = BTreeMap::new();
        let mut forks = 0u64;
        let measure = |moment: usize| -> Result<Point, ForkWalkError> {
            let boundary = boundary_of(moment);
            let mut per_worker: Vec<Vec<u64>> = vec![Vec::new(); jobs];
            for k in 0..samples {
                let seed = derive_seed(settings.seed, Purpose::Fork, moment as u64, u64::from(k));
                per_worker[k as usize % jobs].push(seed);
            }
            let mut sent = 0;
            for (tx, seeds) in job_txs.iter().zip(per_worker) {
                if seeds.is_empty() {
                    continue;
                }
                let job = Job {
                    moment,
                    boundary,
                    seeds,
                };
                if tx.send(job).is_ok() {
                    sent += 1;
                }
            }
            let (mut broke, mut ran) = (0, 0);
            for _ in 0..sent {
                match done_rx.recv() {
                    Ok(Ok((_, b, r))) => {
                        broke += b;
                        ran += r;
                    }
                    Ok(Err(e)) => return Err(ForkWalkError::Fork(retrace_sim::ForkError(e))),
                    Err(_) => break,
                }
            }
            Ok(Point {
                moment,
                boundary: boundary as u64,
                time_ns: steps.get(moment).map_or(0, |s| s.time_ns),
                broke,
                samples: ran,
            })
        };
        let mut record = |measured: &mut BTreeMap<usize, Point>, point: Point| {
            forks += u64::from(point.samples);
            progress(&point, forks);
            measured.insert(point.moment, point);
        };
        let grid = GRID.min(last + 1).max(1);
        for g in 0..grid {
            let moment = if grid == 1 {
                last
            } else {
                g * last / (grid - 1)
            };
            if !measured.contains_key(&moment) {
                record(&mut measured, measure(moment)?);
            }
        }
        while measured.len() < settings.moments_max.max(grid) {
            let pts: Vec<&Point> = measured.values().collect();
            let widest = pts
                .windows(2)
                .filter(|w| w[1].moment - w[0].moment > 1)
                .map(|w| {
                    let diff = (w[1].probability() - w[0].probability()).abs();
                    (diff, w[0].moment, w[1].moment)
                })
                .filter(|(diff, _, _)| *diff >= REFINE_DIFF)
                .max_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
            let Some((_, a, b)) = widest else {
                break;
            };
            record(&mut measured, measure(a + (b - a) / 2)?);
        }
        drop(job_txs);
        let points: Vec<Point> = measured.into_values().collect();
        let (shape, turn, rises) = read_shape(&points);
        Ok(Curve {
            target: target.clone(),
            points,
            forks,
            shape,
            turn,
            rises,
            base_ns,
        })
    })
}

/// Runs one worker's share of a moment's futures: walks to the moment (from the nearest
/// earlier walk it kept) and forks a future per seed.
fn run_job<'r, M: Model>(
    replay: &'r Replay<M>,
    walks: &mut BTreeMap<usize, ForkWalk<'r, M>>,
    job: &Job,
    future: &ForkFuture,
    invariant: &str,
) -> Result<(usize, u32, u32), ForkWalkError> {
    let mut walk = match walks.range(..=job.moment).next_back() {
        Some((_, w)) => w.clone(),
        None => ForkWalk::new(replay)?,
    };
    walk.advance(job.boundary)?;
    let point = walk.point()?;
    let (mut broke, mut ran) = (0u32, 0u32);
    for &seed in &job.seeds {
        let sim = Simulation::fork(
            walk.scenario(),
            &point,
            seed,
            future,
            walk.prefix(),
            TraceSink::Discard,
        )
        .map_err(ForkWalkError::Fork)?;
        let report = sim.run();
        ran += 1;
        if report.violation.is_some_and(|v| v.invariant == invariant) {
            broke += 1;
        }
    }
    walks.insert(job.moment, walk);
    Ok((job.moment, broke, ran))
}

/// The curve's shape, its turn and its largest rises.
fn read_shape(points: &[Point]) -> (Shape, Option<Turn>, Vec<usize>) {
    let ps: Vec<f64> = points.iter().map(Point::probability).collect();
    let (lo, hi) = ps
        .iter()
        .fold((1.0f64, 0.0f64), |(lo, hi), p| (lo.min(*p), hi.max(*p)));
    if hi - lo < FLAT_SPREAD {
        let mean = ps.iter().sum::<f64>() / ps.len().max(1) as f64;
        let shape = if mean >= CERTAIN {
            Shape::FlatHigh
        } else if mean <= UNLIKELY {
            Shape::FlatLow
        } else {
            Shape::Flat
        };
        return (shape, None, Vec::new());
    }
    // Unlikely for the last time, and near-certain first after that (it may dip later —
    // a fork from the middle of a failover can go either way — but never back to
    // unlikely).
    let turn = (0..ps.len())
        .rev()
        .find(|&i| ps[i] <= UNLIKELY)
        .and_then(|unlikely| {
            let certain = (unlikely + 1..ps.len()).find(|&i| ps[i] >= CERTAIN)?;
            Some(Turn { unlikely, certain })
        });
    let (from, to) = turn.map_or((1, ps.len()), |t| (t.unlikely + 1, t.certain + 1));
    let mut rises: Vec<(f64, usize)> = (from..to)
        .map(|i| (ps[i] - ps[i - 1], i))
        .filter(|(d, _)| *d >= RISE_MIN)
        .collect();
    rises.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    rises.truncate(RISES_MAX);
    let mut rises: Vec<usize> = rises.into_iter().map(|(_, i)| i).collect();
    rises.sort_unstable();
    let shape = if turn.is_some() {
        Shape::Turn
    } else {
        Shape::Gradual
    };
    (shape, turn, rises)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points at consecutive moments with these probabilities (of 64 samples).
    fn curve_of(ps: &[f64]) -> Vec<Point> {
        ps.iter()
            .enumerate()
            .map(|(i, p)| Point {
                moment: i,
                boundary: i as u64,
                time_ns: i as u64,
                broke: (p * 64.0).round() as u32,
                samples: 64,
            })
            .collect()
    }

    #[test]
    fn shapes_are_read_as_people_would() {
        /// Probabilities, and the shape, turn and rises they read as.
        type Case<'a> = (&'a [f64], Shape, Option<(usize, usize)>, &'a [usize]);
        let cases: [Case<'_>; 7] = [
            // One step decides it.
            (
                &[0.0, 0.0, 0.02, 1.0, 0.97],
                Shape::Turn,
                Some((2, 3)),
                &[3],
            ),
            // Unlikely to near-certain over several steps: the biggest rises named.
            (
                &[0.0, 0.14, 0.16, 0.28, 0.53, 0.47, 0.59, 0.97, 0.92],
                Shape::Turn,
                Some((2, 7)),
                &[3, 4, 7],
            ),
            // Certain at the kill, then a dip that never gets back to unlikely.
            (
                &[0.0, 0.0, 1.0, 0.45, 0.6, 0.98],
                Shape::Turn,
                Some((1, 2)),
                &[2],
            ),
            (&[0.9, 0.95, 0.92, 1.0], Shape::FlatHigh, None, &[]),
            (&[0.0, 0.05, 0.1, 0.02], Shape::FlatLow, None, &[]),
            (&[0.4, 0.5, 0.45, 0.55], Shape::Flat, None, &[]),
            // Rises, but never stays near-certain.
            (&[0.0, 0.3, 0.6, 0.4], Shape::Gradual, None, &[1, 2]),
        ];
        for (ps, shape, turn, rises) in cases {
            let (s, t, r) = read_shape(&curve_of(ps));
            assert_eq!(s, shape, "{ps:?}");
            assert_eq!(t.map(|t| (t.unlikely, t.certain)), turn, "{ps:?}");
            assert_eq!(r, rises, "{ps:?}");
        }
    }

    #[test]
    fn the_interval_is_honest_at_the_ends() {
        let p = curve_of(&[0.0, 1.0]);
        let (lo, hi) = p[0].interval();
        assert_eq!(lo, 0.0);
        assert!(hi > 0.04 && hi < 0.07, "{hi}");
        let (lo, hi) = p[1].interval();
        assert!(lo > 0.93 && lo < 0.96, "{lo}");
        assert_eq!(hi, 1.0);
    }
}
