//! `retrace bench lin`: the linearizability checker on a kv history of 10,000 operations
//! over 100 keys from 8 concurrent clients (target ≤ 1 s), and what checking inside a run
//! costs (simulated kv runs with the check on against off; target ≤ 20% fewer runs/s).

use crate::bench::replay::peak_rss;
use crate::summary::{group, rate};
use retrace_models::kv::msg::{Entry, Msg, Op, OpResult, Version};
use retrace_models::kv::spec::Register;
use retrace_models::KvModel;
use retrace_sim::history::{History, Instant as At, Operation};
use retrace_sim::linearizability::{check, Limits};
use retrace_sim::{scenario, NodeId, RequestId, SimRng, Simulation, TraceSink};
use std::collections::BTreeMap;
use std::time::Instant;

const OPS: usize = 10_000;
const KEYS: u64 = 100;
const CLIENTS: u64 = 8;

/// A linearizable history: each client runs one operation at a time (a random key, half
/// puts of fresh values), each lasting 1-20 time units with think time between; each takes
/// effect at a random point inside its interval, and results follow that order. With
/// `stale`, one read late in the history returns the value before the latest.
fn kv_history(seed: u64, stale: bool) -> History<Msg> {
    let mut rng = SimRng::new(seed);
    struct Planned {
        client: u64,
        key: String,
        put: Option<String>,
        call: u64,
        ret: u64,
        at: u64,
    }
    let mut clock = vec![0u64; CLIENTS as usize];
    let mut planned = Vec::with_capacity(OPS);
    for n in 0..OPS {
        let client = rng.below(CLIENTS);
        let call = clock[client as usize] + rng.below(5);
        let ret = call + 1 + rng.below(20);
        clock[client as usize] = ret + 1;
        let key = format!("k{}", rng.below(KEYS));
        let put = rng.chance(0.5).then(|| format!("v{n}"));
        let at = call + rng.below(ret - call);
        planned.push(Planned {
            client,
            key,
            put,
            call,
            ret,
            at,
        });
    }
    // Results in the order the operations took effect.
    let mut order: Vec<usize> = (0..OPS).collect();
    order.sort_by_key(|&i| (planned[i].at, i));
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut outputs = vec![None; OPS];
    for &i in &order {
        let p = &planned[i];
        let history = values.entry(p.key.clone()).or_default();
        let seq = history.len() as u64;
        let result = match &p.put {
            Some(v) => {
                history.push(v.clone());
                OpResult::PutOk {
                    version: Version { epoch: 0, seq },
                }
            }
            None => {
                let value = history.last().cloned();
                OpResult::GetOk {
                    entry: value.map(|value| Entry {
                        version: Version { epoch: 0, seq },
                        value,
                    }),
                }
            }
        };
        outputs[i] = Some(Msg::Done(result));
    }
    if stale {
        // One late read returns a value overwritten before it began: of two puts of its key,
        // the older answered before the newer was asked, the newer before the read.
        let late = (OPS * 9 / 10..OPS).find_map(|r| {
            let p = &planned[r];
            if p.put.is_some() {
                return None;
            }
            let mut puts: Vec<usize> = (0..r)
                .filter(|&j| planned[j].key == p.key && planned[j].put.is_some())
                .filter(|&j| planned[j].ret < p.call)
                .collect();
            puts.sort_by_key(|&j| planned[j].ret);
            let (&newer, rest) = puts.split_last()?;
            let older = rest
                .iter()
                .rev()
                .find(|&&j| planned[j].ret < planned[newer].call)?;
            Some((r, *older))
        });
        if let Some((r, older)) = late {
            outputs[r] = Some(Msg::Done(OpResult::GetOk {
                entry: Some(Entry {
                    version: Version { epoch: 0, seq: 0 },
                    value: planned[older].put.clone().unwrap_or_default(),
                }),
            }));
        }
    }
    let ops = planned
        .into_iter()
        .zip(outputs)
        .enumerate()
        .map(|(i, (p, output))| Operation {
            request: RequestId(i as u64),
            node: NodeId(p.client as u32),
            input: Msg::Op(match p.put {
                Some(value) => Op::Put { key: p.key, value },
                None => Op::Get { key: p.key },
            }),
            call: At::call(p.call),
            call_ns: p.call * 1_000_000,
            output,
            ret: At::ret(p.ret),
            ret_ns: Some(p.ret * 1_000_000),
            answered_by: Some(NodeId(p.client as u32)),
        })
        .collect();
    History::from_ops(ops)
}

pub fn run() -> anyhow::Result<u8> {
    println!(
        "retrace bench lin (kv history: {} operations, {KEYS} keys, {CLIENTS} concurrent clients)",
        group(OPS as u64)
    );
    for (label, stale) in [("linearizable", false), ("one stale read", true)] {
        let history = kv_history(7, stale);
        let started = Instant::now();
        let report = check::<Register>(&history, Limits::default());
        let took = started.elapsed();
        let verdict = match (report.is_linearizable(), report.violations.first()) {
            (true, _) => "linearizable".to_string(),
            (false, Some(w)) => format!(
                "not linearizable: witness of {} operations (of {} on key {}){}",
                w.ops.len(),
                w.key_ops,
                w.key,
                if w.minimal { "" } else { ", not minimal" }
            ),
            (false, None) => "not linearizable".to_string(),
        };
        println!(
            "check     {label:<15} {:>7.3}s  {} search steps, {} undecided keys: {verdict} (target <= 1 s: {})",
            took.as_secs_f64(),
            group(report.steps),
            report.undecided.len(),
            if took.as_secs_f64() <= 1.0 { "met" } else { "MISSED" }
        );
    }
    println!("memory    peak resident {}", peak_rss());

    // Checking inside runs: the same kv runs with the check on and off, interleaved; on a
    // network that only delays (kv is linearizable there) and with loss and crashes (where
    // kv's at-least-once retries break it, and runs stop at the violation).
    let configs = [
        ("delays only", ""),
        (
            "loss, crashes",
            "drop = 0.01\n[random_faults]\ncrash_rate = \"0.5/s\"\nrestart_after = \"10ms..200ms\"\n",
        ),
    ];
    for (label, faults) in configs {
        let source = |on: bool| {
            format!(
                "model = \"kv\"\nseed = 1\ntime_limit = \"1s\"\n[model_options]\nlinearizable = {on}\n\
                 [workload]\nrate = \"300/s\"\n[network]\nlatency = \"1ms..5ms\"\n{faults}"
            )
        };
        let mut runs = [0u64; 2];
        let mut time = [std::time::Duration::ZERO; 2];
        let mut broken = [0u64; 2];
        for round in 0..6u64 {
            for (k, on) in [false, true].into_iter().enumerate() {
                let s = scenario::parse::<KvModel>("bench-lin.toml", &source(on))
                    .map_err(anyhow::Error::msg)?;
                let started = Instant::now();
                for seed in round * 50..round * 50 + 50 {
                    let report = Simulation::<KvModel>::new(&s, seed, TraceSink::Discard).run();
                    broken[k] += u64::from(report.violation.is_some());
                    runs[k] += 1;
                }
                time[k] += started.elapsed();
            }
        }
        let per_s = |k: usize| runs[k] as f64 / time[k].as_secs_f64();
        let loss = 1.0 - per_s(1) / per_s(0);
        println!(
            "in runs   kv 1 s runs, {label:<13}: {} off, {} with the check ({:.0}% fewer; target <= 20%: {}); runs that broke an invariant: {} off, {} on",
            rate(runs[0], time[0]).replace(" /s", " runs/s"),
            rate(runs[1], time[1]).replace(" /s", " runs/s"),
            loss * 100.0,
            if loss <= 0.20 { "met" } else { "MISSED" },
            broken[0],
            broken[1]
        );
    }
    Ok(crate::exit::OK)
}
