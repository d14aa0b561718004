//! The encoder and parser against hand-built messages; the kernel's view of the rules is
//! checked in `delegates/tests/masq.rs`.

use super::*;

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

#[test]
fn prefixes_are_encoded_as_nft_encodes_them() {
    // Whole bytes: compare just those bytes.
    assert_eq!(
        Expr::prefix(16, net("10.77.0.0/24"), false),
        vec![
            Expr::Payload { offset: 16, len: 3 },
            Expr::Cmp {
                eq: false,
                data: vec![10, 77, 0]
            }
        ]
    );
    // A full-length prefix is the address itself.
    assert_eq!(
        Expr::prefix(12, net("10.77.0.2/32"), true),
        vec![
            Expr::Payload { offset: 12, len: 4 },
            Expr::Cmp {
                eq: true,
                data: vec![10, 77, 0, 2]
            }
        ]
    );
    // Ending inside a byte: load the whole address and mask it.
    assert_eq!(
        Expr::prefix(16, net("224.0.0.0/4"), false),
        vec![
            Expr::Payload { offset: 16, len: 4 },
            Expr::Mask(vec![0xf0, 0, 0, 0]),
            Expr::Cmp {
                eq: false,
                data: vec![224, 0, 0, 0]
            }
        ]
    );
    // /0 has no whole byte to compare: nft masks everything away.
    assert_eq!(
        Expr::prefix(16, net("0.0.0.0/0"), false),
        vec![
            Expr::Payload { offset: 16, len: 4 },
            Expr::Mask(vec![0; 4]),
            Expr::Cmp {
                eq: false,
                data: vec![0; 4]
            }
        ]
    );
    let v6 = Expr::prefix(24, net("fd00::/52"), false);
    assert_eq!(
        v6[0],
        Expr::Payload {
            offset: 24,
            len: 16
        }
    );
    assert_eq!(
        v6[1],
        Expr::Mask(vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ])
    );
}

#[test]
fn a_rule_message_is_laid_out_as_the_kernel_reads_it() {
    let mut w = Writer::default();
    let exprs = [Expr::Masquerade];
    encode(
        &mut w,
        FAMILY_INET,
        7,
        &Op::AddRule {
            table: "t",
            chain: "c",
            exprs: &exprs,
            comment: "hi",
        },
    );
    let b = &w.buf;
    assert_eq!(
        u32_at(b, 0),
        Some(b.len() as u32),
        "length covers the message"
    );
    assert_eq!(u16_at(b, 4), Some(10 << 8 | NFT_MSG_NEWRULE));
    assert_eq!(
        u16_at(b, 6),
        Some(NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK)
    );
    assert_eq!(u32_at(b, 8), Some(7));
    assert_eq!(&b[16..20], &[FAMILY_INET, 0, 0, 0]);
    let top = attrs(&b[20..]).unwrap();
    let types: Vec<u16> = top.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        types,
        vec![
            NFTA_RULE_TABLE,
            NFTA_RULE_CHAIN,
            NFTA_RULE_EXPRESSIONS,
            NFTA_RULE_USERDATA
        ]
    );
    assert_eq!(top[0].1, b"t\0");
    assert_eq!(top[3].1, &[UDATA_RULE_COMMENT, 3, b'h', b'i', 0]);
    let elems = attrs(top[2].1).unwrap();
    assert_eq!(elems.len(), 1);
    let masq = attrs(elems[0].1).unwrap();
    assert_eq!(masq[0], (NFTA_EXPR_NAME, &b"masq\0"[..]));
    assert_eq!(
        masq[1],
        (NFTA_EXPR_DATA, &[][..]),
        "empty data, as nft sends"
    );
    // Nested attributes carry the flag the kernel's strict parser expects.
    assert_eq!(
        u16_at(&b[20..], 4 + 4 + 4 + 4 + 2),
        Some(NFTA_RULE_EXPRESSIONS | NLA_F_NESTED)
    );
}

#[test]
fn a_dumped_rule_yields_handle_chain_and_comment() {
    let mut w = Writer::default();
    let m = w.begin(10 << 8 | NFT_MSG_NEWRULE, 0, 1, FAMILY_INET);
    w.attr_str(NFTA_RULE_TABLE, "t");
    w.attr_str(NFTA_RULE_CHAIN, "postrouting");
    w.attr(NFTA_RULE_HANDLE, &42u64.to_be_bytes());
    w.attr(
        NFTA_RULE_USERDATA,
        &[1, 1, 9, UDATA_RULE_COMMENT, 4, b'a', b'b', b'c', 0],
    );
    w.end(m);
    let msgs = messages(&w.buf).unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        parse_rule(msgs[0].payload).unwrap(),
        Rule {
            chain: "postrouting".into(),
            handle: 42,
            comment: Some("abc".into())
        }
    );
}

#[test]
fn truncated_answers_are_errors_not_panics() {
    let mut w = Writer::default();
    let m = w.begin(10 << 8 | NFT_MSG_NEWRULE, 0, 1, FAMILY_INET);
    w.attr(NFTA_RULE_HANDLE, &42u64.to_be_bytes());
    w.end(m);
    for cut in 0..w.buf.len() {
        let b = &w.buf[..cut];
        if let Ok(msgs) = messages(b) {
            for m in msgs {
                let _ = parse_rule(m.payload);
            }
        }
    }
    assert!(matches!(
        parse_rule(&[0, 0, 0, 0]),
        Err(NftError::Malformed("rule without handle"))
    ));
    assert_eq!(comment(&[0, 9, b'x']), None);
}
