//! The article's TCP client, against a running ackloop:
//!
//! ```sh
//! cargo run --release &                                  # the server
//! cargo run --example tcp_client -- localhost:8000   # or 127.0.0.1:8000
//! ```

mod article;

fn main() {
    let server = article::server_from_args();
    match article::tcp_hello(server) {
        Ok(reply) => println!("Received from server: {reply}"),
        Err(e) => {
            eprintln!("tcp_client: {server}: {e}");
            std::process::exit(1);
        }
    }
}
