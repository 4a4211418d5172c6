//! Criterion benches for the core (filled in below).

fn main() {}
