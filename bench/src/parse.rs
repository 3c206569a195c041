//! Parsers for what the harness reads back: wrk's output (plus the `RMBENCH`
//! lines of our Lua hook and of our own generators), `/proc` figures, callgrind
//! dumps and HTTP/1.1 response heads. Pure functions, unit-tested below.

/// What one wrk run reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkResult {
    pub requests: u64,
    pub duration_s: f64,
    pub rps: f64,
    pub bytes: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Only present when our Lua `done` hook ran (plain wrk prints no p99.9).
    pub p999_us: Option<f64>,
    /// Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses.
    pub errors: u64,
}

/// A wrk duration such as `812.00us`, `1.23ms`, `2.01s`, `1.00m` in microseconds.
pub fn parse_wrk_duration_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let mult = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(v * mult)
}

/// `1.23MB` → bytes (wrk prints binary multiples: 1 KB = 1024 B).
pub fn parse_wrk_size(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let mult = match unit {
        "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0f64.powi(4),
        _ => return None,
    };
    Some(v * mult)
}

/// The Lua hook the harness passes to wrk with `-s`: it prints exact figures
/// (microseconds, counts) in lines starting with `RMBENCH`, including p99.9.
pub const WRK_LUA: &str = r#"
done = function(summary, latency, requests)
  io.write(string.format("RMBENCH requests %d\n", summary.requests))
  io.write(string.format("RMBENCH duration_us %d\n", summary.duration))
  io.write(string.format("RMBENCH bytes %d\n", summary.bytes))
  local e = summary.errors
  io.write(string.format("RMBENCH errors %d\n", e.connect + e.read + e.write + e.status + e.timeout))
  io.write(string.format("RMBENCH p50_us %d\n", latency:percentile(50)))
  io.write(string.format("RMBENCH p99_us %d\n", latency:percentile(99)))
  io.write(string.format("RMBENCH p999_us %d\n", latency:percentile(99.9)))
end
"#;

/// Parses wrk's standard output (with `--latency`), then lets the `RMBENCH`
/// lines of [`WRK_LUA`] override the rounded figures when present.
pub fn parse_wrk(out: &str) -> Option<WrkResult> {
    let mut r = WrkResult::default();
    let mut seen_requests = false;
    let mut in_dist = false;
    for line in out.lines() {
        let t = line.trim();
        let f: Vec<&str> = t.split_whitespace().collect();
        if t.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        if in_dist && f.len() == 2 && f[0].ends_with('%') {
            let v = parse_wrk_duration_us(f[1]);
            match f[0] {
                "50%" => r.p50_us = v?,
                "99%" => r.p99_us = v?,
                _ => {}
            }
            continue;
        }
        in_dist = false;
        // "123456 requests in 5.00s, 12.34MB read"
        if f.len() >= 5 && f[1] == "requests" && f[2] == "in" {
            r.requests = f[0].parse().ok()?;
            r.duration_s = parse_wrk_duration_us(f[3].trim_end_matches(','))? / 1e6;
            if let Some(sz) = f.get(4).and_then(|s| parse_wrk_size(s)) {
                r.bytes = sz as u64;
            }
            seen_requests = true;
        } else if t.starts_with("Requests/sec:") {
            r.rps = f.get(1)?.parse().ok()?;
        } else if t.starts_with("Socket errors:") {
            // "Socket errors: connect 0, read 12, write 0, timeout 3"
            for w in f.windows(2) {
                if matches!(w[0], "connect" | "read" | "write" | "timeout") {
                    r.errors += w[1].trim_end_matches(',').parse::<u64>().unwrap_or(0);
                }
            }
        } else if t.starts_with("Non-2xx or 3xx responses:") {
            r.errors += f.last()?.parse::<u64>().ok()?;
        } else if f.len() == 3 && f[0] == "RMBENCH" {
            let v: f64 = f[2].parse().ok()?;
            match f[1] {
                "requests" => {
                    r.requests = v as u64;
                    seen_requests = true;
                }
                "duration_us" => r.duration_s = v / 1e6,
                "bytes" => r.bytes = v as u64,
                "errors" => r.errors = v as u64,
                "p50_us" => r.p50_us = v,
                "p99_us" => r.p99_us = v,
                "p999_us" => r.p999_us = Some(v),
                _ => {}
            }
        }
    }
    if !seen_requests {
        return None;
    }
    if r.duration_s > 0.0 {
        r.rps = r.requests as f64 / r.duration_s;
    }
    Some(r)
}

/// `utime + stime` in clock ticks from the text of `/proc/PID/stat` (the
/// command name may contain spaces and parentheses: fields are counted from
/// the last `)`).
pub fn parse_proc_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // after ")": state(3) ppid(4) ... utime is field 14, stime 15 → index 11, 12
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Parent PID (field 4) from `/proc/PID/stat`.
pub fn parse_proc_stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A `kB` field (`VmRSS`, `VmHWM`, `Pss`, …) from `/proc/PID/status` or
/// `smaps_rollup`, in bytes.
pub fn parse_proc_kb_field(text: &str, field: &str) -> Option<u64> {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(field) {
            if let Some(rest) = rest.strip_prefix(':') {
                let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
                return Some(kb * 1024);
            }
        }
    }
    None
}

/// Total `Ir` of a callgrind dump: the `summary:` line (or `totals:`).
pub fn parse_callgrind_total(dump: &str) -> Option<u64> {
    let mut events_ir_index = 0;
    for line in dump.lines() {
        if let Some(ev) = line.strip_prefix("events:") {
            events_ir_index = ev.split_whitespace().position(|e| e == "Ir").unwrap_or(0);
        }
    }
    for key in ["summary:", "totals:"] {
        for line in dump.lines() {
            if let Some(v) = line.strip_prefix(key) {
                return v.split_whitespace().nth(events_ir_index)?.parse().ok();
            }
        }
    }
    None
}

/// Splits one HTTP/1.1 response head: status code and Content-Length (if any).
pub fn parse_response_head(head: &[u8]) -> Option<(u16, Option<usize>, bool)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let code: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let mut len = None;
    let mut chunked = false;
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") {
            len = value.trim().parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            chunked = true;
        }
    }
    Some((code, len, chunked))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUT: &str = "Running 5s test @ http://127.0.0.1:20003/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   412.55us  120.31us   5.01ms   91.20%
    Req/Sec    78.12k     2.31k   81.00k    80.00%
  Latency Distribution
     50%  398.00us
     75%  440.00us
     90%  512.00us
     99%    1.02ms
  388712 requests in 5.00s, 61.91MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  77742.10
Transfer/sec:     12.38MB
";

    #[test]
    fn wrk_plain_output() {
        let r = parse_wrk(WRK_OUT).unwrap();
        assert_eq!(r.requests, 388712);
        assert!((r.duration_s - 5.0).abs() < 1e-9);
        assert!((r.rps - 77742.4).abs() < 0.1, "{}", r.rps);
        assert_eq!(r.p50_us, 398.0);
        assert_eq!(r.p99_us, 1020.0);
        assert_eq!(r.p999_us, None);
        assert_eq!(r.errors, 12);
        assert_eq!(r.bytes, (61.91 * 1024.0 * 1024.0) as u64);
    }

    #[test]
    fn wrk_lua_lines_override() {
        let out = format!(
            "{WRK_OUT}RMBENCH requests 388712\nRMBENCH duration_us 5000123\nRMBENCH bytes 64917312\n\
             RMBENCH errors 0\nRMBENCH p50_us 397\nRMBENCH p99_us 1017\nRMBENCH p999_us 2210\n"
        );
        let r = parse_wrk(&out).unwrap();
        assert_eq!(r.p50_us, 397.0);
        assert_eq!(r.p99_us, 1017.0);
        assert_eq!(r.p999_us, Some(2210.0));
        assert_eq!(r.errors, 0);
        assert_eq!(r.bytes, 64917312);
        assert!((r.duration_s - 5.000123).abs() < 1e-9);
    }

    #[test]
    fn wrk_failed_run_is_none() {
        assert!(parse_wrk("unable to connect to 127.0.0.1:20003 Connection refused\n").is_none());
    }

    #[test]
    fn wrk_durations_and_sizes() {
        assert_eq!(parse_wrk_duration_us("812.00us"), Some(812.0));
        assert_eq!(parse_wrk_duration_us("1.50ms"), Some(1500.0));
        assert_eq!(parse_wrk_duration_us("2.00s"), Some(2e6));
        assert_eq!(parse_wrk_duration_us("1.00m"), Some(60e6));
        assert_eq!(parse_wrk_duration_us("abc"), None);
        assert_eq!(parse_wrk_size("1.00KB"), Some(1024.0));
        assert_eq!(
            parse_wrk_size("2.00GB"),
            Some(2.0 * 1024.0 * 1024.0 * 1024.0)
        );
    }

    #[test]
    fn proc_stat_with_odd_comm() {
        let stat = "4242 (ringmesh) (w 0)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    150 37 0 0 20 0 3 0 12345 123456789 2048 18446744073709551615";
        assert_eq!(parse_proc_stat_cpu_ticks(stat), Some(187));
        assert_eq!(parse_proc_stat_ppid(stat), Some(1));
        let nginx = "100 (nginx) S 99 100 100 0 -1 4194624 10 0 0 0 7 3 0 0 20 0 1 0 5 1000 300";
        assert_eq!(parse_proc_stat_cpu_ticks(nginx), Some(10));
        assert_eq!(parse_proc_stat_ppid(nginx), Some(99));
        assert_eq!(parse_proc_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn proc_status_fields() {
        let status = "Name:\tringmesh-proxy\nVmPeak:\t  123456 kB\nVmHWM:\t    9000 kB\nVmRSS:\t    8123 kB\n";
        assert_eq!(parse_proc_kb_field(status, "VmRSS"), Some(8123 * 1024));
        assert_eq!(parse_proc_kb_field(status, "VmHWM"), Some(9000 * 1024));
        assert_eq!(parse_proc_kb_field(status, "VmSwap"), None);
        let rollup =
            "00400000-7fff [rollup]\nRss:                9000 kB\nPss:                4000 kB\n";
        assert_eq!(parse_proc_kb_field(rollup, "Pss"), Some(4000 * 1024));
    }

    #[test]
    fn callgrind_totals() {
        let dump = "# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\ncmd: x\npart: 2\n\n\
                    desc: I1 cache: \npositions: line\nevents: Ir\nsummary: 123456789\n\nfl=(1) a.rs\n";
        assert_eq!(parse_callgrind_total(dump), Some(123456789));
        let two = "events: Dr Ir\ntotals: 5 77\n";
        assert_eq!(parse_callgrind_total(two), Some(77));
        assert_eq!(parse_callgrind_total("nothing"), None);
    }

    #[test]
    fn response_heads() {
        let h = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nx: y";
        assert_eq!(parse_response_head(h), Some((200, Some(12), false)));
        let h = b"HTTP/1.1 502 Bad Gateway\r\ntransfer-encoding: chunked";
        assert_eq!(parse_response_head(h), Some((502, None, true)));
    }
}
