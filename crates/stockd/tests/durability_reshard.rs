//! Restarts with another shard count (`--shards` 2 → 5 → 1 → 2 of the real binary, each
//! stop a SIGTERM): every channel, position, ledger, ATS and hold stays as it was.

mod common;

use stockd::proto::inventory::v1 as pb;

use common::fixtures::{
    Channels, LOC, TestFolder, hold_mix, products_on_every_shard, start_seeded,
};
use common::visible::{assert_same, visible};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_different_shard_count_keeps_everything() {
    let folder = TestFolder::new();
    let products = products_on_every_shard("S", LOC, 5, 2);
    let mut keys: Vec<(String, String)> = Vec::new();
    for p in &products {
        keys.push((p.clone(), LOC.into()));
        keys.push((p.clone(), "DC2".into()));
    }

    let (mut server, mut admin, mut inv) = start_seeded(
        &folder,
        &["--shards", "2"],
        Channels::Standard,
        &keys,
        |i| 20 + i as i64,
    )
    .await;
    admin
        .adjust_stock(pb::AdjustStockRequest {
            adjustments: vec![pb::StockAdjustment {
                adjustment_ref: "adj-1".into(),
                product_ref: products[0].clone(),
                location_ref: LOC.into(),
                r#type: pb::AdjustmentType::Delta as i32,
                quantity: 7,
                occurred_at: None,
            }],
        })
        .await
        .expect("AdjustStock");
    let holds = hold_mix(&mut inv, &products, "sc").await;
    let before = visible(&server, &keys, &holds).await;
    drop((admin, inv));

    let status = server.terminate().await;
    assert!(
        status.success(),
        "SIGTERM: stockd exited with {status}\n{}",
        server.log()
    );

    for shards in ["5", "1", "2"] {
        let mut server = folder.start(&["--shards", shards]).await;
        let after = visible(&server, &keys, &holds).await;
        assert_same(
            &before,
            &after,
            &format!("after a restart with --shards {shards}"),
            &server.log(),
        );
        let status = server.terminate().await;
        assert!(
            status.success(),
            "SIGTERM: stockd exited with {status}\n{}",
            server.log()
        );
    }
}
