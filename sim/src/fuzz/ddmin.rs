//! Delta debugging: the two searches the minimiser runs over lists of requests, faults and
//! choices, each bounded by a budget of re-executions.

/// Delta debugging (Zeller's ddmin) over `items`: the smallest subset found for which
/// `fails(subset)` still holds, with at most `budget` calls.
pub(super) fn ddmin<T: Clone>(
    items: Vec<T>,
    budget: &mut u32,
    fails: &mut dyn FnMut(&[T]) -> bool,
) -> Vec<T> {
    let mut current = items;
    let mut n = 2usize;
    while current.len() >= 2 && *budget > 0 {
        let chunk = current.len().div_ceil(n);
        let mut reduced = false;
        for start in (0..current.len()).step_by(chunk) {
            if *budget == 0 {
                break;
            }
            // Try the complement of this chunk.
            let complement: Vec<T> = current
                .iter()
                .enumerate()
                .filter(|(i, _)| *i < start || *i >= start + chunk)
                .map(|(_, t)| t.clone())
                .collect();
            *budget -= 1;
            if fails(&complement) {
                current = complement;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if n >= current.len() {
                break;
            }
            n = (n * 2).min(current.len());
        }
    }
    if current.len() == 1 && *budget > 0 {
        *budget -= 1;
        if fails(&[]) {
            current.clear();
        }
    }
    current
}

/// The largest set of `items` whose removal keeps `fails(removed)` true, found greedily by
/// halving: remove big chunks first, smaller ones when those do not work.
pub(super) fn ddmin_remove(
    items: Vec<usize>,
    budget: &mut u32,
    fails: &mut dyn FnMut(&[usize]) -> bool,
) -> Vec<usize> {
    let mut removed: Vec<usize> = Vec::new();
    let mut chunk = items.len().max(1);
    while chunk >= 1 && *budget > 0 {
        let remaining: Vec<usize> = items
            .iter()
            .copied()
            .filter(|i| !removed.contains(i))
            .collect();
        if remaining.is_empty() {
            break;
        }
        let mut progressed = false;
        for part in remaining.chunks(chunk) {
            if *budget == 0 {
                break;
            }
            *budget -= 1;
            let mut trial = removed.clone();
            trial.extend_from_slice(part);
            if fails(&trial) {
                removed = trial;
                progressed = true;
            }
        }
        if !progressed {
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
    }
    removed
}
