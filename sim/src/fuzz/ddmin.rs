//! Delta debugging: the two searches the minimiser runs over lists of requests, faults and
//! choices, each bounded by a budget of re-executions.

/// Delta debugging (Zeller's ddmin) over `items`: the smallest subset found for which
/// `fails(subset)` still holds, with at most `budget` calls.
pub(crate) fn ddmin<T: Clone>(
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
