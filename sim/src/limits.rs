//! Every size retrace accepts from outside, in one place. Each limit is checked where the
//! input enters (scenario parsing, the trace reader's header check, the schedule loader,
//! the manifest reader, the wire), with an error that names the file and the place; and
//! each is small enough that anything retrace writes within it, it can read back (a
//! scenario of `MAX_SCENARIO_BYTES` fits a trace header frame with room to spare).
//! `scenarios/README.md` lists them for users.

/// Nodes in one cluster. Vector clocks, per-node lanes and per-node state all grow with
/// the node count, so memory is proportional to the input only while this is bounded.
pub const MAX_NODES: usize = 256;

/// Closed-loop clients in one workload (`[workload] clients`): each is a model object and,
/// under `retrace cluster`, a thread.
pub const MAX_CLIENTS: u32 = 1024;

/// A scenario file (and so the scenario text a trace header carries).
pub const MAX_SCENARIO_BYTES: u64 = 1 << 20;

/// A node's name or role in a trace header or log header.
pub const MAX_NAME_BYTES: usize = 256;

/// A schedule file (`retrace run --schedule`); a 50 M-step run's choices fit.
pub const MAX_SCHEDULE_BYTES: u64 = 256 << 20;

/// Faults anchored at times in a schedule, and requests it leaves out.
pub const MAX_SCHEDULE_ENTRIES: usize = 1 << 20;

/// Incarnations (logs) listed in a recorded run's manifest, over all nodes.
pub const MAX_MANIFEST_LOGS: usize = 65_536;

/// A manifest file.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Reads all of `input` as UTF-8 text, refusing more than `max_bytes`: what `retrace run
/// /dev/zero` needs so that reading a scenario is bounded before anything parses it.
/// (Reads from a reader the caller opened: the sim crate does no I/O of its own.)
pub fn read_text_bounded(input: impl std::io::Read, max_bytes: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    input.take(max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than the {max_bytes}-byte limit"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })
}
