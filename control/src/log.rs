//! Log lines on stderr: `ringmesh-control LEVEL message`, one per event.
//! (systemd and kubectl add their own timestamps.)

#[macro_export]
macro_rules! log_info {
    ($($arg:tt)*) => { eprintln!("ringmesh-control INFO {}", format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! log_warn {
    ($($arg:tt)*) => { eprintln!("ringmesh-control WARN {}", format_args!($($arg)*)) };
}

/// Seconds since the Unix epoch, for records and status.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
