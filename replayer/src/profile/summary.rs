//! Many requests' profiles folded into percentiles, one profile at a time: a trace read a
//! chunk at a time (`chunked`) never holds its profiles, only the numbers the summary is
//! computed from — per place, the times of the requests that spent any time there.

use super::{Place, RequestProfile};
use serde::Serialize;
use std::collections::BTreeMap;

/// How many of a window's slowest requests a comparison names.
const HIT_MAX: usize = 20;

#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    pub mean_ns: u64,
}

pub fn percentiles(values: &mut [u64]) -> Percentiles {
    percentiles_with_zeros(0, values)
}

/// The percentiles of `values` together with `zeros` more zeros, without making them: a
/// place most requests never touch counts as zero for each of those.
fn percentiles_with_zeros(zeros: usize, values: &mut [u64]) -> Percentiles {
    values.sort_unstable();
    let len = zeros + values.len();
    let at = |p: f64| {
        if len == 0 {
            return 0;
        }
        let i = ((len as f64 - 1.0) * p).round() as usize;
        i.checked_sub(zeros).map_or(0, |i| values[i])
    };
    let mean = if len == 0 {
        0
    } else {
        values.iter().sum::<u64>() / len as u64
    };
    Percentiles {
        p50_ns: at(0.5),
        p90_ns: at(0.9),
        p99_ns: at(0.99),
        max_ns: at(1.0),
        mean_ns: mean,
    }
}

/// Where the time of many requests went.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub requests: usize,
    pub latency: Percentiles,
    /// Per place: the distribution of its per-request time (requests that never touch a
    /// place count as zero), most total time first.
    pub places: Vec<(Place, Percentiles, u64)>,
}

/// A `Summary` being made, one request at a time.
#[derive(Default)]
pub struct Summarizer {
    latency_ns: Vec<u64>,
    /// Per place, the time of each request that spent any there (a critical path keeps
    /// only hops that took time, so these are never zero).
    places: BTreeMap<Place, Vec<u64>>,
}

impl Summarizer {
    pub fn add(&mut self, p: &RequestProfile) {
        self.add_places(p.latency_ns, &p.by_place());
    }

    /// Adds a request of this latency that spent this time per place.
    fn add_places(&mut self, latency_ns: u64, by_place: &BTreeMap<&Place, u64>) {
        self.latency_ns.push(latency_ns);
        for (&place, &ns) in by_place {
            // A place's name is cloned once, when it is first seen: this runs per request.
            match self.places.get_mut(place) {
                Some(times) => times.push(ns),
                None => {
                    self.places.insert(place.clone(), vec![ns]);
                }
            }
        }
    }

    pub fn finish(mut self) -> Summary {
        let requests = self.latency_ns.len();
        let mut places: Vec<(Place, Percentiles, u64)> = self
            .places
            .into_iter()
            .map(|(place, mut v)| {
                let total = v.iter().sum();
                let zeros = requests - v.len();
                (place, percentiles_with_zeros(zeros, &mut v), total)
            })
            .collect();
        places.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        Summary {
            requests,
            latency: percentiles(&mut self.latency_ns),
            places,
        }
    }
}

pub fn summarize(profiles: &[RequestProfile]) -> Summary {
    let mut s = Summarizer::default();
    profiles.iter().for_each(|p| s.add(p));
    s.finish()
}

/// A window against the rest of the run: where the extra time went, and whom it hit.
#[derive(Clone, Debug, Serialize)]
pub struct WindowComparison {
    pub window: Summary,
    pub rest: Summary,
    /// Per place: mean time per request inside the window minus outside, largest first.
    pub extra: Vec<(Place, i64)>,
    /// The window's slowest requests: id, latency, and the place that took most of it.
    pub hit: Vec<(u64, u64, Place)>,
}

/// A `WindowComparison` being made, one request at a time.
pub struct WindowSummarizer {
    from_ns: u64,
    to_ns: u64,
    window: Summarizer,
    rest: Summarizer,
    /// The slowest requests in the window so far; trimmed to `HIT_MAX` whenever it holds
    /// twice that, so it stays small however many requests pass.
    hit: Vec<(u64, u64, Place)>,
}

impl WindowSummarizer {
    pub fn new(from_ns: u64, to_ns: u64) -> Self {
        WindowSummarizer {
            from_ns,
            to_ns,
            window: Summarizer::default(),
            rest: Summarizer::default(),
            hit: Vec::new(),
        }
    }

    pub fn add(&mut self, p: &RequestProfile) {
        if p.start_ns < self.from_ns || p.start_ns >= self.to_ns {
            self.rest.add(p);
            return;
        }
        let by_place = p.by_place();
        self.window.add_places(p.latency_ns, &by_place);
        if let Some((place, _)) = by_place.into_iter().max_by_key(|(_, ns)| *ns) {
            self.hit.push((p.request, p.latency_ns, place.clone()));
            if self.hit.len() >= 2 * HIT_MAX {
                self.trim_hit();
            }
        }
    }

    fn trim_hit(&mut self) {
        self.hit.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        self.hit.truncate(HIT_MAX);
    }

    pub fn finish(mut self) -> WindowComparison {
        self.trim_hit();
        let window = self.window.finish();
        let rest = self.rest.finish();
        let mean_of = |s: &Summary, place: &Place| {
            s.places
                .iter()
                .find(|(p, _, _)| p == place)
                .map_or(0, |(_, pc, _)| pc.mean_ns as i64)
        };
        let mut places: Vec<Place> = window
            .places
            .iter()
            .chain(&rest.places)
            .map(|(p, _, _)| p.clone())
            .collect();
        places.sort();
        places.dedup();
        let mut extra: Vec<(Place, i64)> = places
            .into_iter()
            .map(|p| (p.clone(), mean_of(&window, &p) - mean_of(&rest, &p)))
            .collect();
        extra.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        WindowComparison {
            window,
            rest,
            extra,
            hit: self.hit,
        }
    }
}

pub fn compare_window(profiles: &[RequestProfile], from_ns: u64, to_ns: u64) -> WindowComparison {
    let mut w = WindowSummarizer::new(from_ns, to_ns);
    profiles.iter().for_each(|p| w.add(p));
    w.finish()
}
