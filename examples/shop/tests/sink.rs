//! The SMTP sink, spoken to by lettre (the client the e-mail task uses) and by hand: messages
//! delivered and logged, dot-unstuffing, the protocol's order and limits, Message-ID dedupe,
//! fail mode (421 on connect and on every command) and recovery through the control API, and
//! many concurrent connections.

mod common;

use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use shop::sink::{Delivery, Sink, SinkArgs, SinkStats};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn transport(sink: &Sink) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(sink.smtp_addr().port())
        .timeout(Some(Duration::from_secs(20)))
        .pool_config(PoolConfig::new().max_size(100))
        .build()
}

fn message(order: &str, body: &str) -> Message {
    Message::builder()
        .from("Shop <orders@shop.example>".parse().expect("a sender"))
        .to("Ann <ann@customer.example>".parse().expect("a recipient"))
        .subject(format!("Your order {order} is confirmed"))
        .message_id(Some(format!("<order-{order}@shop.example>")))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Shop-Order"),
            order.to_string(),
        ))
        .body(body.to_string())
        .expect("a message")
}

async fn sink_with_log(delay: Duration) -> (Sink, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sink = common::sink_logging_to(dir.path().join("logs").join("mail.jsonl"), delay).await;
    (sink, dir)
}

fn log_of(dir: &tempfile::TempDir) -> Vec<Delivery> {
    let text = std::fs::read_to_string(dir.path().join("logs").join("mail.jsonl"))
        .expect("the log exists");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("each line is a delivery"))
        .collect()
}

async fn control(sink: &Sink, method: &str, path: &str) -> (u16, String) {
    let url = format!("http://{}{path}", sink.control_addr());
    let client = reqwest::Client::new();
    let req = match method {
        "POST" => client.post(&url),
        _ => client.get(&url),
    };
    let res = req.send().await.expect("the control API answers");
    let status = res.status().as_u16();
    (status, res.text().await.expect("a body"))
}

async fn stats(sink: &Sink) -> SinkStats {
    let (status, body) = control(sink, "GET", "/stats").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("stats are JSON")
}

/// A hand-written SMTP client: one line out, the reply's lines in.
struct Raw {
    read: BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    async fn connect(sink: &Sink) -> (Raw, String) {
        let stream = TcpStream::connect(sink.smtp_addr())
            .await
            .expect("connects");
        let (read, write) = stream.into_split();
        let mut raw = Raw {
            read: BufReader::new(read),
            write,
        };
        let greeting = raw.reply().await;
        (raw, greeting)
    }

    /// The whole reply (every line of a multi-line one), or "" when the server closed.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.read.read_line(&mut line).await.expect("reads");
            if n == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    async fn send(&mut self, text: &str) -> String {
        self.write.write_all(text.as_bytes()).await.expect("writes");
        self.reply().await
    }
}

#[tokio::test]
async fn lettre_delivers_through_the_sink_and_each_message_is_logged() {
    let (sink, dir) = sink_with_log(Duration::from_millis(50)).await;
    let t = transport(&sink);
    let m = message(
        "o-1",
        "Thank you.\n.A line starting with a dot\n..and two\n",
    );
    let response = t.send(m).await.expect("the sink accepts the message");
    assert!(response.is_positive(), "{response:?}");
    assert_eq!(
        stats(&sink).await,
        SinkStats {
            delivered: 1,
            duplicates: 0,
            refused: 0,
            failing: false
        }
    );
    let log = log_of(&dir);
    assert_eq!(log.len(), 1, "{log:?}");
    let d = &log[0];
    assert_eq!(d.message_id.as_deref(), Some("<order-o-1@shop.example>"));
    assert_eq!(d.order.as_deref(), Some("o-1"));
    assert_eq!(d.to, "ann@customer.example");
    assert_eq!(d.subject.as_deref(), Some("Your order o-1 is confirmed"));
    assert!(!d.duplicate);
    assert!(d.at_ms > 0 && d.bytes > 0);
    assert_eq!(sink.deliveries(), log, "memory and log agree");
}

#[tokio::test]
async fn the_protocol_is_spoken_by_hand_with_dot_unstuffing_and_limits() {
    let (sink, _dir) = sink_with_log(Duration::ZERO).await;
    let (mut c, greeting) = Raw::connect(&sink).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    // Order matters: no MAIL before the greeting, no RCPT before MAIL, no DATA before RCPT.
    assert!(c
        .send("MAIL FROM:<a@x.example>\r\n")
        .await
        .starts_with("503"));
    let ehlo = c.send("EHLO client.example\r\n").await;
    assert!(ehlo.starts_with("250-") && ehlo.contains("SIZE") && ehlo.contains("8BITMIME"));
    assert!(c.send("RCPT TO:<b@x.example>\r\n").await.starts_with("503"));
    assert!(c.send("DATA\r\n").await.starts_with("503"));
    assert!(c.send("MAIL FROM a@x.example\r\n").await.starts_with("501"));
    assert!(c
        .send("MAIL FROM:<a@x.example> SIZE=999999999999\r\n")
        .await
        .starts_with("552"));
    assert!(c
        .send("MAIL FROM:<a@x.example> BODY=8BITMIME\r\n")
        .await
        .starts_with("250"));
    assert!(
        c.send("MAIL FROM:<a@x.example>\r\n")
            .await
            .starts_with("503"),
        "nested MAIL"
    );
    assert!(
        c.send("DATA\r\n").await.starts_with("554"),
        "no recipients yet"
    );
    assert!(c.send("RCPT TO:<b@x.example>\r\n").await.starts_with("250"));
    assert!(c.send("RCPT TO:<c@x.example>\r\n").await.starts_with("250"));
    assert!(c.send("NOOP\r\n").await.starts_with("250"));
    assert!(c.send("DATA\r\n").await.starts_with("354"));
    // Dot-stuffed lines lose their first dot; the lone dot ends the message.
    let text = "Message-ID: <raw-1@x.example>\r\nSubject: by hand\r\n\r\n..leading dot\r\n.\r\n";
    assert!(c.send(text).await.starts_with("250"));
    let unstuffed = "Message-ID: <raw-1@x.example>\r\nSubject: by hand\r\n\r\n.leading dot\r\n";
    let d = sink.deliveries().pop().expect("delivered");
    assert_eq!(d.bytes, unstuffed.len());
    assert_eq!(d.to, "b@x.example,c@x.example");
    assert_eq!(d.order, None);
    // RSET drops the transaction.
    assert!(c
        .send("MAIL FROM:<a@x.example>\r\n")
        .await
        .starts_with("250"));
    assert!(c.send("RSET\r\n").await.starts_with("250"));
    assert!(c.send("RCPT TO:<b@x.example>\r\n").await.starts_with("503"));
    // An over-long command line is refused, and the connection goes on.
    let long = format!("NOOP {}\r\n", "x".repeat(10_000));
    assert!(c.send(&long).await.starts_with("500"));
    assert!(c.send("HELO again.example\r\n").await.starts_with("250"));
    assert!(c.send("FROB\r\n").await.starts_with("502"));
    assert!(c.send("QUIT\r\n").await.starts_with("221"));
    assert_eq!(c.reply().await, "", "closed after QUIT");
    assert_eq!(sink.stats().delivered, 1);
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_refused_and_not_delivered() {
    let sink = Sink::start(SinkArgs {
        max_message_bytes: 2048,
        ..SinkArgs::local()
    })
    .await
    .expect("the sink starts");
    let (mut c, _) = Raw::connect(&sink).await;
    c.send("HELO x.example\r\n").await;
    c.send("MAIL FROM:<a@x.example>\r\n").await;
    c.send("RCPT TO:<b@x.example>\r\n").await;
    assert!(c.send("DATA\r\n").await.starts_with("354"));
    let big = format!(
        "Subject: big\r\n\r\n{}.\r\n",
        "y".repeat(100).repeat(30) + "\r\n"
    );
    assert!(c.send(&big).await.starts_with("552"));
    assert_eq!(sink.stats().delivered, 0);
    // The connection is still usable.
    assert!(c.send("NOOP\r\n").await.starts_with("250"));
}

#[tokio::test]
async fn a_second_message_with_the_same_message_id_is_answered_but_not_delivered_again() {
    let (sink, dir) = sink_with_log(Duration::ZERO).await;
    let t = transport(&sink);
    t.send(message("o-2", "first")).await.expect("accepted");
    let again = t.send(message("o-2", "again")).await.expect("accepted too");
    assert!(again.is_positive());
    t.send(message("o-3", "another order"))
        .await
        .expect("accepted");
    let s = stats(&sink).await;
    assert_eq!((s.delivered, s.duplicates), (2, 1));
    let log = log_of(&dir);
    let flags: Vec<(Option<&str>, bool)> = log
        .iter()
        .map(|d| (d.order.as_deref(), d.duplicate))
        .collect();
    assert_eq!(
        flags,
        vec![
            (Some("o-2"), false),
            (Some("o-2"), true),
            (Some("o-3"), false)
        ]
    );
}

#[tokio::test]
async fn fail_mode_answers_421_on_connect_and_on_every_command_until_recovered() {
    let (sink, dir) = sink_with_log(Duration::ZERO).await;
    // A connection opened before the outage...
    let (mut before, greeting) = Raw::connect(&sink).await;
    assert!(greeting.starts_with("220"));
    assert!(before.send("EHLO x.example\r\n").await.starts_with("250"));

    let (status, body) = control(&sink, "POST", "/fail?seconds=600").await;
    assert_eq!(status, 200, "{body}");
    assert!(stats(&sink).await.failing);

    // ...is refused at its next command, and closed.
    assert!(before.send("NOOP\r\n").await.starts_with("421"));
    assert_eq!(before.reply().await, "");
    // A new one is refused at once.
    let (_, greeting) = Raw::connect(&sink).await;
    assert!(greeting.starts_with("421"), "{greeting}");
    // lettre sees a transient error with code 421.
    let err = transport(&sink)
        .send(message("o-4", "during the outage"))
        .await
        .expect_err("refused");
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.status().map(|c| c.to_string()), Some("421".to_string()));
    let s = stats(&sink).await;
    assert_eq!(s.delivered, 0);
    assert!(s.refused >= 3, "{s:?}");

    let (status, _) = control(&sink, "POST", "/recover").await;
    assert_eq!(status, 200);
    transport(&sink)
        .send(message("o-4", "after the outage"))
        .await
        .expect("accepted after recovery");
    let s = stats(&sink).await;
    assert_eq!((s.delivered, s.duplicates, s.failing), (1, 0, false));
    assert_eq!(log_of(&dir).len(), 1, "refused messages are not logged");
}

#[tokio::test]
async fn fail_mode_ends_by_itself_after_its_seconds() {
    let sink = Sink::start(SinkArgs::local())
        .await
        .expect("the sink starts");
    let (status, _) = control(&sink, "POST", "/fail?seconds=0.3").await;
    assert_eq!(status, 200);
    let (_, greeting) = Raw::connect(&sink).await;
    assert!(greeting.starts_with("421"));
    common::eventually("fail mode ends", Duration::from_secs(30), || async {
        !stats(&sink).await.failing
    })
    .await;
    let (_, greeting) = Raw::connect(&sink).await;
    assert!(greeting.starts_with("220"), "{greeting}");
}

#[tokio::test]
async fn the_control_api_refuses_bad_input() {
    let sink = Sink::start(SinkArgs::local())
        .await
        .expect("the sink starts");
    assert_eq!(control(&sink, "POST", "/fail").await.0, 400);
    assert_eq!(control(&sink, "POST", "/fail?seconds=0").await.0, 400);
    assert_eq!(control(&sink, "POST", "/fail?seconds=-1").await.0, 400);
    assert_eq!(control(&sink, "POST", "/fail?seconds=abc").await.0, 400);
    assert!(!stats(&sink).await.failing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_messages_at_once_with_a_delay_are_all_delivered() {
    let (sink, dir) = sink_with_log(Duration::from_millis(200)).await;
    let t = transport(&sink);
    let sends = (0..200).map(|i| {
        let t = t.clone();
        async move { t.send(message(&format!("c-{i}"), "concurrent")).await }
    });
    let results = futures_util::future::join_all(sends).await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    let s = stats(&sink).await;
    assert_eq!((s.delivered, s.duplicates), (200, 0));
    assert_eq!(log_of(&dir).len(), 200);
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let sink = Sink::start(SinkArgs::local())
        .await
        .expect("the sink starts");
    let addr = sink.smtp_addr();
    sink.shutdown().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "nothing listens anymore"
    );
}

#[tokio::test]
async fn shop_smtp_sink_runs_as_a_process_configured_by_flags_and_environment() {
    use tokio::process::Command;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = dir.path().join("mail.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shop"))
        .args(["smtp-sink", "--bind", "127.0.0.1:0"])
        .env("SHOP_SINK_CONTROL", "127.0.0.1:0")
        .env("SHOP_SINK_LOG", &log)
        .env("SHOP_SINK_DELAY", "10ms")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("shop smtp-sink starts");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), out.next_line())
        .await
        .expect("it says where it listens")
        .expect("reads")
        .expect("a line");
    let after = |marker: &str| -> String {
        let rest = &first[first.find(marker).expect(&first) + marker.len()..];
        rest.split([' ', ','])
            .next()
            .expect("an address")
            .to_string()
    };
    let smtp: std::net::SocketAddr = after("smtp://").parse().expect("the SMTP address");
    let control = after("http://");
    assert!(first.contains("delay 10ms"), "{first}");

    let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(smtp.port())
        .build();
    t.send(message("p-1", "from a process"))
        .await
        .expect("accepted");
    t.send(message("p-1", "again")).await.expect("accepted");
    let s: SinkStats =
        common::get_json(reqwest::Client::new().get(format!("http://{control}/stats"))).await;
    assert_eq!((s.delivered, s.duplicates), (1, 1));

    let status = common::terminate(&mut child).await;
    assert!(status.success(), "{status}");
    let last = out.next_line().await.expect("reads").expect("a last line");
    assert!(last.contains("1 delivered, 1 duplicates"), "{last}");
    let lines = std::fs::read_to_string(&log).expect("the log");
    assert_eq!(lines.lines().count(), 2);
}
