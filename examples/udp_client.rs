//! The article's UDP client, against a running ackloop:
//!
//! ```sh
//! cargo run --release                                    # terminal 1: the server (Ctrl-C stops it)
//! cargo run --release --example udp_client -- localhost:8000   # terminal 2, once it printed its addresses
//! ```

mod article;

fn main() {
    let server = article::server_from_args();
    match article::udp_hello(server) {
        Ok(reply) => println!("Received from server: {reply}"),
        Err(e) => {
            eprintln!("udp_client: {server}: {e}");
            std::process::exit(1);
        }
    }
}
