//! Routes: matching a method and path to one of the API's operations.

use std::fmt;

/// One operation of the API (a route template and its method), or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// `POST /v1/intents`
    ProposeIntent,
    /// `POST /v1/facts`
    SubmitFact,
    /// `POST /v1/hints`
    SubmitHint,
    /// `POST /v1/intents/{id}/claim`
    Claim,
    /// `POST /v1/intents/{id}/renew`
    Renew,
    /// `POST /v1/intents/{id}/withdraw`
    Withdraw,
    /// `POST /v1/hints/{id}/retract`
    RetractHint,
    /// `POST /v1/batch`
    Batch,
    /// `GET /v1/intents`
    ListIntents,
    /// `GET /v1/intents/{id}`
    GetIntent,
    /// `GET /v1/facts`
    ListFacts,
    /// `GET /v1/records/{id}`
    GetRecord,
    /// `GET /v1/records/{id}/provenance`
    Provenance,
    /// `GET /v1/hints`
    ListHints,
    /// `GET /v1/log`
    Log,
    /// `GET /v1/events` (Server-Sent Events)
    Events,
    /// `GET /v1/health`
    Health,
    /// `GET /metrics`
    Metrics,
    /// `GET /v1/openapi.json`
    OpenApi,
    /// `POST /v1/contract`
    DeployContract,
    /// `GET /v1/contract`
    GetContract,
    /// `GET /v1/contract/history`
    ContractHistory,
    /// `GET /v1/checkpoint`
    Checkpoint,
    /// `GET /v1/proof/inclusion`
    InclusionProof,
    /// `GET /v1/proof/consistency`
    ConsistencyProof,
    /// No route matched the path.
    Unmatched,
}

impl Route {
    /// Every route the API serves (not [`Route::Unmatched`]).
    pub const ALL: [Route; 25] = [
        Route::ProposeIntent,
        Route::SubmitFact,
        Route::SubmitHint,
        Route::Claim,
        Route::Renew,
        Route::Withdraw,
        Route::RetractHint,
        Route::Batch,
        Route::ListIntents,
        Route::GetIntent,
        Route::ListFacts,
        Route::GetRecord,
        Route::Provenance,
        Route::ListHints,
        Route::Log,
        Route::Events,
        Route::Health,
        Route::Metrics,
        Route::OpenApi,
        Route::DeployContract,
        Route::GetContract,
        Route::ContractHistory,
        Route::Checkpoint,
        Route::InclusionProof,
        Route::ConsistencyProof,
    ];

    /// The HTTP method (`"-"` for [`Route::Unmatched`]).
    pub fn method(self) -> &'static str {
        match self {
            Route::ProposeIntent
            | Route::SubmitFact
            | Route::SubmitHint
            | Route::Claim
            | Route::Renew
            | Route::Withdraw
            | Route::RetractHint
            | Route::Batch
            | Route::DeployContract => "POST",
            Route::Unmatched => "-",
            _ => "GET",
        }
    }

    /// The path template, as in `spec/api.md` (`"unmatched"` for [`Route::Unmatched`]).
    pub fn template(self) -> &'static str {
        match self {
            Route::ProposeIntent | Route::ListIntents => "/v1/intents",
            Route::SubmitFact | Route::ListFacts => "/v1/facts",
            Route::SubmitHint | Route::ListHints => "/v1/hints",
            Route::GetIntent => "/v1/intents/{id}",
            Route::Claim => "/v1/intents/{id}/claim",
            Route::Renew => "/v1/intents/{id}/renew",
            Route::Withdraw => "/v1/intents/{id}/withdraw",
            Route::RetractHint => "/v1/hints/{id}/retract",
            Route::Batch => "/v1/batch",
            Route::GetRecord => "/v1/records/{id}",
            Route::Provenance => "/v1/records/{id}/provenance",
            Route::Log => "/v1/log",
            Route::Events => "/v1/events",
            Route::Health => "/v1/health",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/v1/openapi.json",
            Route::DeployContract | Route::GetContract => "/v1/contract",
            Route::ContractHistory => "/v1/contract/history",
            Route::Checkpoint => "/v1/checkpoint",
            Route::InclusionProof => "/v1/proof/inclusion",
            Route::ConsistencyProof => "/v1/proof/consistency",
            Route::Unmatched => "unmatched",
        }
    }

    /// Whether the route changes state.
    pub fn is_write(self) -> bool {
        self.method() == "POST"
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method(), self.template())
    }
}

/// What a path matched: the routes serving it (one per method) and the `{id}` segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMatch<'a> {
    /// Routes with this path template.
    pub routes: Vec<Route>,
    /// The `{id}` path segment, if the template has one.
    pub id: Option<&'a str>,
}

/// The route a request counts under in metrics: the one with this path and method,
/// else the first with this path (a method that is not allowed), else
/// [`Route::Unmatched`]. `path` is without the query.
pub fn route_for(method: &str, path: &str) -> Route {
    match_path(path)
        .and_then(|m| {
            let first = m.routes.first().copied();
            m.routes
                .iter()
                .copied()
                .find(|r| r.method().eq_ignore_ascii_case(method))
                .or(first)
        })
        .unwrap_or(Route::Unmatched)
}

/// Matches a path (without query) against the templates.
pub fn match_path(path: &str) -> Option<PathMatch<'_>> {
    let plain = |routes: Vec<Route>| Some(PathMatch { routes, id: None });
    match path {
        "/metrics" => return plain(vec![Route::Metrics]),
        "/v1/intents" => return plain(vec![Route::ListIntents, Route::ProposeIntent]),
        "/v1/facts" => return plain(vec![Route::ListFacts, Route::SubmitFact]),
        "/v1/hints" => return plain(vec![Route::ListHints, Route::SubmitHint]),
        "/v1/log" => return plain(vec![Route::Log]),
        "/v1/batch" => return plain(vec![Route::Batch]),
        "/v1/events" => return plain(vec![Route::Events]),
        "/v1/health" => return plain(vec![Route::Health]),
        "/v1/openapi.json" => return plain(vec![Route::OpenApi]),
        "/v1/contract" => return plain(vec![Route::GetContract, Route::DeployContract]),
        "/v1/contract/history" => return plain(vec![Route::ContractHistory]),
        "/v1/checkpoint" => return plain(vec![Route::Checkpoint]),
        "/v1/proof/inclusion" => return plain(vec![Route::InclusionProof]),
        "/v1/proof/consistency" => return plain(vec![Route::ConsistencyProof]),
        _ => {}
    }
    let segs: Vec<&str> = path.strip_prefix("/v1/")?.split('/').collect();
    let (route, id) = match segs.as_slice() {
        ["intents", id] => (Route::GetIntent, *id),
        ["intents", id, "claim"] => (Route::Claim, *id),
        ["intents", id, "renew"] => (Route::Renew, *id),
        ["intents", id, "withdraw"] => (Route::Withdraw, *id),
        ["hints", id, "retract"] => (Route::RetractHint, *id),
        ["records", id] => (Route::GetRecord, *id),
        ["records", id, "provenance"] => (Route::Provenance, *id),
        _ => return None,
    };
    if id.is_empty() {
        return None;
    }
    Some(PathMatch {
        routes: vec![route],
        id: Some(id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_that_is_not_allowed_counts_under_the_paths_first_route() {
        assert_eq!(route_for("DELETE", "/v1/intents"), Route::ListIntents);
        assert_eq!(route_for("post", "/v1/intents"), Route::ProposeIntent);
    }

    #[test]
    fn templates_match_their_own_paths() {
        for r in Route::ALL {
            let path = r.template().replace("{id}", "0123abcd");
            let m = match_path(&path).expect("matches");
            assert!(m.routes.contains(&r), "{r}");
            assert_eq!(m.id.is_some(), r.template().contains("{id}"));
            assert_eq!(route_for(r.method(), &path), r);
        }
        for bad in [
            "/",
            "/v1",
            "/v1/",
            "/v1/intents/",
            "/v1/records//provenance",
            "/v2/log",
        ] {
            assert!(match_path(bad).is_none(), "{bad}");
            assert_eq!(route_for("GET", bad), Route::Unmatched);
        }
    }
}
