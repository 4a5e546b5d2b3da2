// A misspelt option and a malformed duration in #[celeriac::cached].
#[celeriac::cached(tll = "60s")]
async fn product(id: u64) -> String {
    id.to_string()
}

#[celeriac::cached(ttl = "soon")]
async fn price(id: u64) -> u64 {
    id
}

fn main() {}
