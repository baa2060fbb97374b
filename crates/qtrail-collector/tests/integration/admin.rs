//! CollectorAdmin and authorization, against a real server on port 0.

use crate::common;

use std::sync::Arc;

use common::{ADMIN, AUDITOR, PUBLISHER, PublishStream, TestServer, authed};
use qtrail_proto::qtrail::audit::v1 as proto;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn creates_gets_and_lists_collectors() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut admin = server.admin().await;
    for location in ["us-east", "eu-de", "jp-tok"] {
        let created = server.create_collector(location).await;
        assert_eq!(created.location, location);
        assert_eq!(created.event_count, 0);
        assert!(created.create_time.is_some());
        assert!(created.head_chain_hash.is_empty());
    }
    let again = admin
        .create_collector(authed(proto::CreateCollectorRequest { location: "eu-de".into() }, ADMIN))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    assert_eq!(again.message(), "a collector for location `eu-de` already exists");

    let got =
        admin.get_collector(authed(proto::GetCollectorRequest { location: "jp-tok".into() }, ADMIN)).await.unwrap();
    assert_eq!(got.into_inner().location, "jp-tok");
    let missing =
        admin.get_collector(authed(proto::GetCollectorRequest { location: "au-syd".into() }, ADMIN)).await.unwrap_err();
    assert_eq!((missing.code(), missing.message()), (Code::NotFound, "no collector for location `au-syd`"));

    let list = admin.list_collectors(authed(proto::ListCollectorsRequest {}, ADMIN)).await.unwrap().into_inner();
    let locations: Vec<String> = list.collectors.into_iter().map(|c| c.location).collect();
    assert_eq!(locations, ["eu-de", "jp-tok", "us-east"]);
    server.stop().await;
}

#[tokio::test]
async fn refuses_malformed_locations() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut admin = server.admin().await;
    for bad in ["", "US-EAST", "us_east", "-us", "u", "us--east", "us-east\n"] {
        let status = admin
            .create_collector(authed(proto::CreateCollectorRequest { location: bad.into() }, ADMIN))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
        assert!(status.message().contains("location"), "{}", status.message());
        assert!(!status.message().ends_with('.'));
        let get = admin.get_collector(authed(proto::GetCollectorRequest { location: bad.into() }, ADMIN)).await;
        assert_eq!(get.unwrap_err().code(), Code::InvalidArgument);
    }
    server.stop().await;
}

/// Many concurrent creates for one location: exactly one wins, and after a restart on the same
/// data directory none does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_concurrent_create_wins_also_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..2 {
        let server = Arc::new(TestServer::start(dir.path()).await);
        let channel = server.channel().await;
        let calls = (0..32).map(|_| {
            let mut admin = proto::collector_admin_client::CollectorAdminClient::new(channel.clone());
            tokio::spawn(async move {
                admin
                    .create_collector(authed(proto::CreateCollectorRequest { location: "us-east".into() }, ADMIN))
                    .await
            })
        });
        let results = futures_util::future::join_all(calls).await;
        let mut wins = 0;
        for result in results {
            match result.unwrap() {
                Ok(_) => wins += 1,
                Err(status) => assert_eq!(status.code(), Code::AlreadyExists, "{status:?}"),
            }
        }
        assert_eq!(wins, if round == 0 { 1 } else { 0 }, "round {round}");
        drop(channel);
        Arc::into_inner(server).expect("sole owner").stop().await;
    }
}

#[tokio::test]
async fn each_service_needs_a_token_of_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    let mut admin = server.admin().await;
    let mut query = server.query().await;

    for (token, code) in [
        (None, Code::Unauthenticated),
        (Some("wrong"), Code::Unauthenticated),
        (Some(PUBLISHER), Code::PermissionDenied),
    ] {
        let request = match token {
            Some(token) => authed(proto::ListCollectorsRequest {}, token),
            None => tonic::Request::new(proto::ListCollectorsRequest {}),
        };
        let status = admin.list_collectors(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{token:?}");
        let message = status.message();
        assert!(!message.contains("secret"), "token leaked: {message}");
    }
    // An auditor may list and read the collectors (to find the locations it can query), but
    // not create one.
    let listed = admin.list_collectors(authed(proto::ListCollectorsRequest {}, AUDITOR)).await.unwrap();
    assert_eq!(listed.into_inner().collectors.len(), 1);
    let read = admin.get_collector(authed(proto::GetCollectorRequest { location: "us-east".into() }, AUDITOR)).await;
    assert_eq!(read.unwrap().into_inner().location, "us-east");
    let create = proto::CreateCollectorRequest { location: "eu-de".into() };
    let denied = admin.create_collector(authed(create, AUDITOR)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(denied.message(), "token `alice` has role `auditor`, this service needs role `admin`");
    let denied = admin.list_collectors(authed(proto::ListCollectorsRequest {}, PUBLISHER)).await.unwrap_err();
    assert_eq!(denied.message(), "token `runtime-us-east` has role `publisher`, this service needs role `admin`");

    let request = |token: Option<&str>| {
        let message = proto::QueryEventsRequest { location: "us-east".into(), ..Default::default() };
        match token {
            Some(token) => authed(message, token),
            None => tonic::Request::new(message),
        }
    };
    assert_eq!(query.query_events(request(None)).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(query.query_events(request(Some(ADMIN))).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(query.query_events(request(Some(PUBLISHER))).await.unwrap_err().code(), Code::PermissionDenied);
    assert!(query.query_events(request(Some(AUDITOR))).await.is_ok());

    for token in [ADMIN, AUDITOR, "nope"] {
        let code = match PublishStream::open_with_token(&server, token).await {
            Err(status) => status.code(),
            Ok(mut stream) => stream.error().await.code(),
        };
        let expected = if token == "nope" { Code::Unauthenticated } else { Code::PermissionDenied };
        assert_eq!(code, expected, "{token}");
    }

    // Health needs no token.
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "qtrail.audit.v1.Ingest", "qtrail.audit.v1.EventQuery", "qtrail.audit.v1.CollectorAdmin"] {
        let response = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(response.status, ServingStatus::Serving as i32, "{service}");
    }
    server.stop().await;
}

/// Reflection answers in both protocol versions without a token, listing every service.
#[tokio::test]
async fn reflection_lists_services_in_both_versions() {
    use tonic_reflection::pb::{v1, v1alpha};

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let expected = ["qtrail.audit.v1.CollectorAdmin", "qtrail.audit.v1.EventQuery", "qtrail.audit.v1.Ingest"];

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut responses = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|service| service.name).collect();
    for service in expected {
        assert!(names.iter().any(|name| name == service), "{service} missing from {names:?}");
    }

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut responses = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    assert!(list.service.iter().any(|service| service.name == "qtrail.audit.v1.Ingest"));
    server.stop().await;
}
