//! The timex collector: the kernel clock discipline state from adjtimex(2)
//! (offset, frequency, sync status), read only.

use super::{counter, gauge, Settings};
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn timex(_s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    const STA_NANO: i32 = 0x2000;
    const TIME_ERROR: i32 = 5;
    // adjtimex(2) scales frequencies as ppm with a 16-bit fraction.
    const PPM16: f64 = 1_000_000.0 * 65536.0;
    const MICRO: f64 = 1e6;
    let mut tx = rtime_clock::adjtime::Timex::new();
    // modes = 0: read only.
    let state = rtime_clock::adjtime::adjtimex(&mut tx)
        .map_err(|e| CollectError::failed(format!("adjtimex failed: {e}")))?;
    let t = &tx.0;
    let divisor = if t.status & STA_NANO != 0 { 1e9 } else { MICRO };
    let sync = if state == TIME_ERROR { 0.0 } else { 1.0 };
    let g = gauge;
    Ok(vec![
        g(
            "node_timex_sync_status",
            "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
            sync,
        ),
        g(
            "node_timex_offset_seconds",
            "Time offset in between local system and reference clock.",
            t.offset as f64 / divisor,
        ),
        g(
            "node_timex_frequency_adjustment_ratio",
            "Local clock frequency adjustment.",
            1.0 + t.freq as f64 / PPM16,
        ),
        g(
            "node_timex_maxerror_seconds",
            "Maximum error in seconds.",
            t.maxerror as f64 / MICRO,
        ),
        g(
            "node_timex_estimated_error_seconds",
            "Estimated error in seconds.",
            t.esterror as f64 / MICRO,
        ),
        g(
            "node_timex_status",
            "Value of the status array bits.",
            t.status as f64,
        ),
        g(
            "node_timex_loop_time_constant",
            "Phase-locked loop time constant.",
            t.constant as f64,
        ),
        g(
            "node_timex_tick_seconds",
            "Seconds between clock ticks.",
            t.tick as f64 / MICRO,
        ),
        g(
            "node_timex_pps_frequency_hertz",
            "Pulse per second frequency.",
            t.ppsfreq as f64 / PPM16,
        ),
        g(
            "node_timex_pps_jitter_seconds",
            "Pulse per second jitter.",
            t.jitter as f64 / divisor,
        ),
        g(
            "node_timex_pps_shift_seconds",
            "Pulse per second interval duration.",
            t.shift as f64,
        ),
        g(
            "node_timex_pps_stability_hertz",
            "Pulse per second stability, average of recent frequency changes.",
            t.stabil as f64 / PPM16,
        ),
        counter(
            "node_timex_pps_jitter_total",
            "Pulse per second count of jitter limit exceeded events.",
            t.jitcnt as f64,
        ),
        counter(
            "node_timex_pps_calibration_total",
            "Pulse per second count of calibration intervals.",
            t.calcnt as f64,
        ),
        counter(
            "node_timex_pps_error_total",
            "Pulse per second count of calibration errors.",
            t.errcnt as f64,
        ),
        counter(
            "node_timex_pps_stability_exceeded_total",
            "Pulse per second count of stability limit exceeded events.",
            t.stbcnt as f64,
        ),
        g(
            "node_timex_tai_offset_seconds",
            "International Atomic Time (TAI) offset.",
            t.tai as f64,
        ),
    ])
}
