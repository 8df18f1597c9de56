//! Small pages while recovery builds the engines: transparent huge pages are turned off
//! for the process during recovery (`prctl(PR_SET_THP_DISABLE)`) and put back after.
//!
//! Why: a restart touches about a gigabyte of fresh memory (1,000,000 positions and
//! 1,000,000 holds), and the allocator (mimalloc) asks for huge pages for its arenas. On a
//! virtual machine whose host backs guest memory lazily and takes freed blocks back (free
//! page reporting, as on this project's Firecracker machine), every fresh 2 MiB huge page
//! makes the host fault its memory in at the first touch: measured there, 1 GiB of fresh
//! huge pages cost 0.1–11 s of system time, against a steady 0.7–0.8 s in 4 KiB pages, and
//! a restart spent 5.9–12.8 s of system time against 1.4 s (`cargo bench --bench restart`).
//! The recovered engine keeps its small pages (the kernel may merge them into huge ones
//! later, off the start); memory allocated after recovery gets huge pages again.

use std::sync::Mutex;

/// The guards alive, and whether huge pages were disabled before the first of them
/// (`None`: unknown, nothing to put back): recoveries may overlap (tests, a shard reloaded
/// while another starts), and only the last one to end puts the flag back.
static GUARDS: Mutex<(usize, Option<bool>)> = Mutex::new((0, None));

fn thp_disabled() -> Option<bool> {
    // SAFETY: PR_GET_THP_DISABLE reads one flag of this process; it takes no pointer.
    let got = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
    (got >= 0).then_some(got == 1)
}

fn set_thp_disabled(disabled: bool) -> bool {
    // SAFETY: PR_SET_THP_DISABLE sets one flag of this process; it takes no pointer.
    unsafe {
        libc::prctl(
            libc::PR_SET_THP_DISABLE,
            libc::c_ulong::from(disabled),
            0,
            0,
            0,
        ) == 0
    }
}

/// Turns transparent huge pages off for the process until the last one is dropped, which
/// puts back what was set before. Best effort: where the kernel refuses, nothing changes.
pub struct SmallPages(());

impl SmallPages {
    pub fn during_recovery() -> SmallPages {
        let mut guards = GUARDS.lock().unwrap_or_else(|p| p.into_inner());
        if guards.0 == 0 {
            guards.1 = thp_disabled().filter(|_| set_thp_disabled(true));
        }
        guards.0 += 1;
        SmallPages(())
    }
}

impl Drop for SmallPages {
    fn drop(&mut self) {
        let mut guards = GUARDS.lock().unwrap_or_else(|p| p.into_inner());
        guards.0 -= 1;
        if guards.0 == 0
            && let Some(before) = guards.1.take()
        {
            set_thp_disabled(before);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_are_off_while_a_recovery_runs() {
        // Other tests' recoveries may run alongside, so only what holds whatever they do
        // is asserted: off while a guard lives (where the kernel has the flag).
        let supported = thp_disabled().is_some();
        let guard = SmallPages::during_recovery();
        let inner = SmallPages::during_recovery();
        drop(inner);
        if supported {
            assert_eq!(
                thp_disabled(),
                Some(true),
                "still off while one guard lives"
            );
        }
        drop(guard);
    }
}
