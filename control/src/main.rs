fn main() {
    eprintln!("ringmesh-control: not built yet");
    std::process::exit(2);
}
