//! The article's UDP client, against a running ackloop:
//!
//! ```sh
//! cargo run --release &                                  # the server
//! cargo run --example udp_client -- localhost:8000   # or 127.0.0.1:8000
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
