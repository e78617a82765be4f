//! `HTTPS_PROXY` is honoured for WeCom's HTTPS API, so a corp whose self-built app only
//! answers from its trusted IP (企业可信IP) can call out through a fixed-IP proxy. (Its
//! own test binary: the variable is process-wide.)

use std::io::{BufRead, BufReader};
use std::net::TcpListener;

#[tokio::test]
async fn calls_to_wecom_go_through_the_https_proxy() {
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = proxy.local_addr().unwrap();
    // SAFETY: this test binary has one test; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("HTTPS_PROXY", format!("http://{addr}")) };
    let seen = std::thread::spawn(move || {
        let (conn, _) = proxy.accept().unwrap();
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line).unwrap();
        line // dropping the connection makes the call fail: no real WeCom is reached
    });
    let client = siyu_wecom::client::Client::new(siyu_wecom::client::DEFAULT_BASE, "wwcorp", "secret");
    assert!(client.get_follow_user_list().await.is_err());
    let request = seen.join().unwrap();
    assert!(request.starts_with("CONNECT qyapi.weixin.qq.com:443"), "{request}");
}
