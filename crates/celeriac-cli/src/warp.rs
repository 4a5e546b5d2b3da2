//! A clock that runs faster than real time, for the process tests of `beat` and
//! `limits check` (minutes of schedule ticks or quota windows in seconds). The flags exist in
//! debug builds only: a release binary, the one users run, has no way to warp its clock.

use celeriac::clock::Clock;
use std::sync::Arc;

/// The hidden flags of the warped clock (none in a release build).
#[derive(clap::Args, Debug, Default, Clone)]
pub(super) struct Warp {
    /// FOR TESTS ONLY (debug builds): run this command's clock this many times faster than
    /// real time from --test-time-origin. Every process sharing a store must get the same
    /// scale and origin.
    #[cfg(debug_assertions)]
    #[arg(long, env = "CELERIAC_TEST_TIME_SCALE", hide = true)]
    test_time_scale: Option<f64>,
    /// FOR TESTS ONLY (debug builds): where the warped clock starts, in milliseconds since the
    /// Unix epoch (default: now).
    #[cfg(debug_assertions)]
    #[arg(long, env = "CELERIAC_TEST_TIME_ORIGIN", hide = true)]
    test_time_origin: Option<i64>,
}

/// A warped clock and where it starts (ms since the Unix epoch).
pub(super) struct Warped {
    pub(super) clock: Arc<dyn Clock>,
    pub(super) origin: i64,
}

impl Warp {
    /// The warped clock, if the flags ask for one.
    ///
    /// # Errors
    /// A scale that is not a finite number of at least 1.
    pub(super) fn clock(&self) -> Result<Option<Warped>, crate::support::CliError> {
        #[cfg(debug_assertions)]
        if let Some(scale) = self.test_time_scale {
            let origin = self
                .test_time_origin
                .unwrap_or_else(celeriac::clock::system_now_ms);
            let clock = celeriac::clock::WarpedClock::new(origin, scale)
                .map_err(|e| crate::support::CliError(format!("--test-time-scale: {e}")))?;
            return Ok(Some(Warped {
                clock: Arc::new(clock),
                origin,
            }));
        }
        Ok(None)
    }
}
