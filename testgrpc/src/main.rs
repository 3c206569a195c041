//! `ringmesh-testgrpc --listen ADDR [--threads N] [--tag T]`: the Echo gRPC
//! server as a process (benchmarks, manual tests).

fn main() {
    let mut listen = "127.0.0.1:50051".to_string();
    let mut threads = 1usize;
    let mut tag = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next();
        match (a.as_str(), v) {
            ("--listen", Some(v)) => listen = v,
            ("--threads", Some(v)) => threads = v.parse().unwrap_or(1),
            ("--tag", Some(v)) => tag = v.into_bytes(),
            _ => {
                eprintln!("usage: ringmesh-testgrpc --listen ADDR [--threads N] [--tag T]");
                std::process::exit(2);
            }
        }
    }
    let addr = match listen.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ringmesh-testgrpc: --listen {listen}: {e}");
            std::process::exit(2);
        }
    };
    let bg = match ringmesh_testgrpc::Background::start(
        addr,
        threads,
        ringmesh_testgrpc::EchoService { tag },
    ) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ringmesh-testgrpc: bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on {}", bg.addr);
    loop {
        std::thread::park();
    }
}
