//! Kafka and the S3 server are real: bytes go through their network protocols and come back.

use sessionizer_e2e::env::unique_name;
use sessionizer_e2e::smoke;

use crate::support::env;

#[tokio::test]
async fn a_message_produced_with_rdkafka_is_consumed_back() {
    let kafka = env().kafka().unwrap();
    let topic = unique_name("smoke");
    let payload = format!("hello from {topic}");
    let read = smoke::kafka_roundtrip(kafka, &topic, &payload)
        .await
        .unwrap();
    assert_eq!(read, payload);
}

#[tokio::test]
async fn an_object_written_through_object_store_is_read_back() {
    let s3 = env().s3().unwrap();
    let bucket = unique_name("smoke");
    let body: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let read = smoke::s3_roundtrip(s3, &bucket, "dir/object.bin", &body)
        .await
        .unwrap();
    assert_eq!(read, body);
}

#[tokio::test]
async fn a_wrong_s3_secret_is_refused() {
    use object_store::ObjectStoreExt;
    let s3 = env().s3().unwrap();
    let bucket = unique_name("smoke");
    s3.create_bucket(&bucket).await.unwrap();
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&s3.endpoint)
        .with_allow_http(true)
        .with_region(sessionizer_e2e::s3::REGION)
        .with_bucket_name(&bucket)
        .with_access_key_id(&s3.access_key)
        .with_secret_access_key("not-the-secret")
        .build()
        .unwrap();
    let path = object_store::path::Path::from("x");
    let error = store.put(&path, b"x".to_vec().into()).await.unwrap_err();
    assert!(
        error.to_string().contains("SignatureDoesNotMatch") || error.to_string().contains("403"),
        "{error}"
    );
}
