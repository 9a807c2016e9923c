//! Bounded waiting for a condition that becomes true in the background.

use std::time::{Duration, Instant};

/// Interval between two checks of the condition.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Checks `condition` until it is true or `timeout` passes, and returns whether it became true.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}
