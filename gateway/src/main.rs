//! payments-gateway: the HTTP front of the `payments` extension. A skeleton
//! for now; the gateway issue fills it in.

fn main() {
    eprintln!("payments-gateway: not implemented yet; use the SQL API (see README.md)");
    std::process::exit(2);
}
