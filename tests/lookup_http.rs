//! `/lookup/number`, `/lookup/search` and `/photo/…` of the shipped binary, asked with curl as an Asterisk
//! dialplan (`CURL()`), a CRM template or a script does, against a synced simulator tenant with the numbers that
//! make caller-ID hard: shared ones, extensions, local numbers without an area code, a disabled account, a name
//! with a line break. The OpenAPI description is checked with `openapi-spec-validator` from the venv.

mod common;

use common::binary::{config_head, free_port, run_server, start_sim, wait_for, Proc};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PASSWORD: &str = "lookup-secret";

const ANNA: &str = "00000000-0000-4000-8000-00000000a001";
const AARON: &str = "00000000-0000-4000-8000-00000000a002";
const BERND: &str = "00000000-0000-4000-8000-00000000a003";
const CARL: &str = "00000000-0000-4000-8000-00000000a004";
const DORA: &str = "00000000-0000-4000-8000-00000000a005";
const FRIDA: &str = "00000000-0000-4000-8000-00000000a006";
const GUSTAV: &str = "00000000-0000-4000-8000-00000000a007";
const HANS: &str = "00000000-0000-4000-8000-00000000a008";
const RECEPTION: &str = "00000000-0000-4000-8000-00000000c001";

/// curl's answer: status, headers (lower-cased names), body.
struct Answer {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// `curl` with `args`; the request must get an answer.
fn curl(args: &[&str]) -> Answer {
    try_curl(args).unwrap_or_else(|e| panic!("curl {args:?}: {e}"))
}

/// `curl` with `args` (`-w` appends the status after the body); `Err` with curl's message when no answer came.
fn try_curl(args: &[&str]) -> Result<Answer, String> {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "20", "-D"])
        .arg(&headers)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl (Debian package curl) is installed");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut body = out.stdout;
    let at = body.iter().rposition(|&b| b == b'\n').expect("the status line");
    let status = String::from_utf8_lossy(&body[at + 1..]).trim().parse().unwrap();
    body.truncate(at);
    Ok(Answer {
        status,
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body,
    })
}

/// A JSON request to the simulator's control API; its status.
fn sim(port: u16, method: &str, path: &str, body: &Value) -> u16 {
    let url = format!("http://127.0.0.1:{port}{path}");
    let body = body.to_string();
    curl(&[
        "-X",
        method,
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &body,
        &url,
    ])
    .status
}

struct Server {
    _proc: Proc,
    http: u16,
}

impl Server {
    fn start(dir: &Path, sim_port: u16) -> Server {
        let (http, admin) = (free_port(), free_port());
        std::fs::write(dir.join("secret"), "demo-secret\n").unwrap();
        let cfg = config_head(dir, sim_port, "org_contacts = true", "")
            + &format!(
                r#"[carddav]
listen = "127.0.0.1:{http}"

[admin]
listen = "127.0.0.1:{admin}"

[[accounts]]
name = "pbx"
password_hash = "{hash}"
"#,
                hash = entradir::accounts::hash_password(PASSWORD).unwrap(),
            );
        let path = dir.join("entradir.toml");
        std::fs::write(&path, cfg).unwrap();
        let proc = run_server(&path);
        wait_for("the server to be ready", Duration::from_secs(60), || {
            try_curl(&[&format!("http://127.0.0.1:{admin}/readyz")]).is_ok_and(|a| a.status == 200)
        });
        Server { _proc: proc, http }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{path_and_query}", self.http)
    }

    /// GET as the PBX account, with more curl arguments.
    fn get(&self, path_and_query: &str, more: &[&str]) -> Answer {
        let auth = format!("pbx:{PASSWORD}");
        let url = self.url(path_and_query);
        let mut args = vec!["-u", auth.as_str()];
        args.extend_from_slice(more);
        args.push(url.as_str());
        curl(&args)
    }

    /// `/lookup/number` with `n` URL-encoded by curl, as a dialplan passes `${CALLERID(num)}`.
    fn number(&self, n: &str, more: &[&str]) -> Answer {
        let auth = format!("pbx:{PASSWORD}");
        let param = format!("n={n}");
        let mut args = vec!["-u", auth.as_str(), "-G", "--data-urlencode", param.as_str()];
        args.extend_from_slice(more);
        let url = self.url("/lookup/number");
        args.push(url.as_str());
        curl(&args)
    }
}

fn user(id: &str, display: &str, given: &str, sn: &str, extra: Value) -> Value {
    let mut u = json!({"id": id, "displayName": display, "givenName": given, "surname": sn,
        "userPrincipalName": format!("{}@contoso.example", id.rsplit('-').next().unwrap()),
        "mailNickname": id.rsplit('-').next().unwrap(), "department": "Lookups", "jobTitle": "Tester",
        "companyName": "Contoso GmbH", "mail": format!("{}@contoso.example", given.to_lowercase())});
    for (k, v) in extra.as_object().unwrap() {
        u[k] = v.clone();
    }
    u
}

/// A `w`×`h` JPEG, as a photo upload.
fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// Width and height as an independent decoder (jpeg-decoder) reads them.
fn jpeg_size(b: &[u8]) -> (u16, u16) {
    let mut d = jpeg_decoder::Decoder::new(b);
    d.read_info().expect("a JPEG");
    let info = d.info().unwrap();
    (info.width, info.height)
}

fn guids(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["objectGUID"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn caller_id_search_and_photos_over_http() {
    let root = tempfile::tempdir().unwrap();
    let (_sim, sim_port) = start_sim(40, 4, 0, 77);
    let add_user = |u: Value| assert_eq!(sim(sim_port, "POST", "/_sim/users", &u), 201, "{u}");
    add_user(user(
        ANNA,
        "Anna Lookup",
        "Anna",
        "Lookup",
        json!({"businessPhones": ["030 5550100"], "mobilePhone": "0151 55501000"}),
    ));
    // One number, three holders: Bernd's own line beats Aaron's second number and the reception contact.
    add_user(user(
        AARON,
        "Aaron Shared",
        "Aaron",
        "Shared",
        json!({"businessPhones": ["+49 30 5550001", "+49 30 5550199"]}),
    ));
    add_user(user(
        BERND,
        "Bernd Shared",
        "Bernd",
        "Shared",
        json!({"businessPhones": ["+49 (30) 555-0199"]}),
    ));
    let contact = json!({"id": RECEPTION, "displayName": "Aaa Reception",
        "phones": [{"type": "business", "number": "+49 30 5550199"}]});
    assert_eq!(sim(sim_port, "POST", "/_sim/contacts", &contact), 201);
    // The switchboard and someone reached through it.
    add_user(user(
        CARL,
        "Carl Extension",
        "Carl",
        "Extension",
        json!({"businessPhones": ["+49 30 5550300 ext. 42"]}),
    ));
    add_user(user(
        DORA,
        "Dora Switchboard",
        "Dora",
        "Switchboard",
        json!({"businessPhones": ["+49 30 5550300"]}),
    ));
    // Last digits: Frida's are hers alone; Munich's and Hamburg's 5557777 are not.
    add_user(user(
        FRIDA,
        "Frida Unique",
        "Frida",
        "Unique",
        json!({"businessPhones": ["+49 711 5554321"]}),
    ));
    add_user(user(
        "00000000-0000-4000-8000-00000000a009",
        "Emil Munich",
        "Emil",
        "Munich",
        json!({"businessPhones": ["+49 89 5557777"]}),
    ));
    add_user(user(
        "00000000-0000-4000-8000-00000000a010",
        "Erika Hamburg",
        "Erika",
        "Hamburg",
        json!({"businessPhones": ["+49 40 5557777"]}),
    ));
    add_user(user(
        GUSTAV,
        "Gustav Gone",
        "Gustav",
        "Gone",
        json!({"businessPhones": ["+49 30 5550500"], "accountEnabled": false}),
    ));
    add_user(user(
        HANS,
        "Hans\nZeile",
        "Hans",
        "Zeile",
        json!({"businessPhones": ["+49 30 5550600"]}),
    ));
    let photo = jpeg(240, 240);
    let photo_file = root.path().join("anna.jpg");
    std::fs::write(&photo_file, &photo).unwrap();
    let upload = curl(&[
        "-X",
        "PUT",
        "--data-binary",
        &format!("@{}", photo_file.display()),
        &format!("http://127.0.0.1:{sim_port}/_sim/users/{ANNA}/photo"),
    ]);
    assert_eq!(upload.status, 204, "{}", upload.text());

    let server = Server::start(root.path(), sim_port);

    // Any spelling of Anna's number finds her; JSON has what a CRM template reads.
    for n in [
        "+49305550100",
        "+49 30 5550100",
        "0049 30 5550100",
        "030 5550100",
        "(030) 555-0100",
        "030/5550100",
    ] {
        let a = server.number(n, &[]);
        assert_eq!(a.status, 200, "{n}: {}", a.text());
        let v = a.json();
        assert_eq!(v["objectGUID"], ANNA, "{n}");
        assert_eq!(v["displayName"], "Anna Lookup");
        assert_eq!(v["matchedNumber"], "+49305550100");
        assert_eq!(v["matchedType"], "business");
        assert_eq!(v["matchedBy"], "number");
        assert_eq!(v["ambiguous"], false);
        assert_eq!(v["department"], "Lookups");
        assert_eq!(v["company"], "Contoso GmbH");
        assert_eq!(v["sn"], "Lookup");
        let numbers: Vec<&str> = v["numbers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["number"].as_str().unwrap())
            .collect();
        assert_eq!(numbers, ["+49305550100", "+4915155501000"]);
        assert_eq!(
            v["photo"].as_str(),
            Some(server.url(&format!("/photo/{ANNA}.jpg")).as_str())
        );
    }
    let mobile = server.number("0151/55501000", &[]).json();
    assert_eq!(
        (mobile["objectGUID"].as_str(), mobile["matchedType"].as_str()),
        (Some(ANNA), Some("mobile"))
    );
    three_cx_template(&server);
    // What Asterisk's CURL() puts into CALLERID(name): the name and nothing else; nothing at all for a stranger.
    let text = server.number("030 5550100", &["-d", "format=text"]);
    assert_eq!((text.status, text.text().as_str()), (200, "Anna Lookup"));
    assert!(text.header("content-type").unwrap().starts_with("text/plain"));
    let stranger = server.number("+49 30 9999999", &["-d", "format=text"]);
    assert_eq!((stranger.status, stranger.text().as_str()), (404, ""));
    let stranger = server.number("+49 30 9999999", &[]);
    assert_eq!(stranger.status, 404);
    assert_eq!(stranger.json()["number"], "+49309999999");
    // A line break in a name never reaches a SIP header.
    assert_eq!(
        server.number("+49305550600", &["-d", "format=text"]).text(),
        "Hans Zeile"
    );

    // A shared number: the winner and the list, winner first.
    let shared = server.number("030 5550199", &[]).json();
    assert_eq!(shared["objectGUID"], BERND, "{shared}");
    assert_eq!(shared["ambiguous"], true);
    assert_eq!(shared["matchCount"], 3, "{shared}");
    assert_eq!(guids(&shared, "matches"), [BERND, AARON, RECEPTION]);
    assert_eq!(shared["matches"][1]["matchedType"], "business");

    // Extensions: the switchboard's number finds the switchboard, the extension its person, also when the trunk
    // appends the extension's digits to the company number.
    assert_eq!(server.number("+49 30 5550300", &[]).json()["objectGUID"], DORA);
    let ext = server.number("+49 30 5550300 ext. 42", &[]).json();
    assert_eq!(
        (ext["objectGUID"].as_str(), ext["matchedBy"].as_str()),
        (Some(CARL), Some("number"))
    );
    let appended = server.number("+4930555030042", &[]).json();
    assert_eq!(appended["objectGUID"], CARL, "{appended}");
    assert_eq!(appended["matchedBy"], "extension");
    assert_eq!(appended["matchedNumber"], "+49305550300 ext. 42");

    // Last digits only when they are one person's.
    let local = server.number("5554321", &[]).json();
    assert_eq!(
        (local["objectGUID"].as_str(), local["matchedBy"].as_str()),
        (Some(FRIDA), Some("lastDigits"))
    );
    let two = server.number("5557777", &[]);
    assert_eq!(two.status, 404, "{}", two.text());
    assert!(
        two.json()["error"].as_str().unwrap().contains("2 people"),
        "{}",
        two.text()
    );
    // Disabled accounts are not in the book, so not found.
    assert_eq!(server.number("+49 30 5550500", &[]).status, 404);

    // Search, phone-book style.
    let s = server.get("/lookup/search?q=shared", &[]).json();
    assert_eq!(guids(&s, "results"), [AARON, BERND], "{s}");
    assert_eq!((s["count"].as_u64(), s["truncated"].as_bool()), (Some(2), Some(false)));
    let s = server.get("/lookup/search?q=shared&limit=1", &[]).json();
    assert_eq!(guids(&s, "results"), [AARON]);
    assert_eq!((s["count"].as_u64(), s["truncated"].as_bool()), (Some(2), Some(true)));
    let s = server.get("/lookup/search?q=an+lo", &[]).json();
    assert_eq!(
        guids(&s, "results"),
        [ANNA],
        "two-letter words match the start of names: {s}"
    );
    let s = server.get("/lookup/search?q=ookup", &[]).json();
    assert_eq!(guids(&s, "results"), [ANNA], "three letters match anywhere: {s}");
    let s = server.get("/lookup/search?q=555-01", &[]).json();
    let found = guids(&s, "results");
    for id in [ANNA, AARON, BERND] {
        assert!(found.contains(&id.to_string()), "{id} in {s}");
    }
    assert!(!found.contains(&GUSTAV.to_string()));
    // A bounded search returns the first of the full order: names starting with the word, then the rest, each
    // in the directory's collation (AD's order: case and accents after the letters).
    let all = server.get("/lookup/search?q=a&limit=100", &[]).json();
    let results = all["results"].as_array().unwrap();
    let names: Vec<String> = results
        .iter()
        .map(|r| r["displayName"].as_str().unwrap().to_string())
        .collect();
    assert!(names.len() > 5 && all["truncated"] == false, "{all}");
    let collator = entradir::directory::collation::Collation::root();
    // A display name, given name or surname that starts with the word.
    let starts: Vec<bool> = results
        .iter()
        .map(|r| {
            ["displayName", "givenName", "sn"]
                .iter()
                .any(|f| r[f].as_str().is_some_and(|v| v.to_lowercase().starts_with('a')))
        })
        .collect();
    let split = starts.iter().position(|s| !s).unwrap_or(names.len());
    assert!(
        split > 0 && starts[split..].iter().all(|s| !s),
        "starting names first: {names:?}"
    );
    for part in [&names[..split], &names[split..]] {
        let keys: Vec<Vec<u8>> = part.iter().map(|n| collator.key(n)).collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "collation order: {part:?}");
    }
    for limit in [1, 3, 5] {
        let some = server.get(&format!("/lookup/search?q=a&limit={limit}"), &[]).json();
        assert_eq!(
            guids(&some, "results"),
            guids(&all, "results")[..limit],
            "limit={limit}"
        );
        assert_eq!(
            (some["count"].clone(), some["truncated"].clone()),
            (all["count"].clone(), json!(true))
        );
    }

    // Photos: as synced, scaled, revalidated.
    let url = format!("/photo/{ANNA}.jpg");
    let original = server.get(&url, &[]);
    assert_eq!(original.status, 200);
    assert_eq!(original.header("content-type").as_deref(), Some("image/jpeg"));
    assert_eq!(jpeg_size(&original.body), (240, 240));
    let small = server.get(&format!("{url}?size=48"), &[]);
    assert_eq!(small.status, 200);
    assert_eq!(jpeg_size(&small.body), (48, 48));
    let etag = small.header("etag").expect("an ETag");
    assert_ne!(Some(&etag), original.header("etag").as_ref());
    let again = server.get(&format!("{url}?size=48"), &["-H", &format!("If-None-Match: {etag}")]);
    assert_eq!((again.status, again.body.len()), (304, 0));
    let medium = server.get(&format!("{url}?size=96"), &[]);
    assert_eq!(jpeg_size(&medium.body), (96, 96));
    assert_ne!(medium.header("etag"), Some(etag.clone()), "each size has its own ETag");
    assert_eq!(
        server.get(&format!("/photo/{DORA}.jpg"), &[]).status,
        404,
        "Dora has no photo"
    );
    assert_eq!(
        server.get(&format!("/photo/{GUSTAV}.jpg"), &[]).status,
        404,
        "not in a book"
    );

    // The description validates as OpenAPI 3.0.
    let spec = server.get("/lookup/openapi.json", &[]);
    assert_eq!(spec.status, 200);
    let spec_file = root.path().join("openapi.json");
    std::fs::write(&spec_file, &spec.body).unwrap();
    let checked = Command::new(common::venv_bin("openapi-spec-validator"))
        .arg(&spec_file)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let spec = spec.json();
    for p in ["/lookup/number", "/lookup/search", "/photo/{objectGUID}.jpg"] {
        assert!(spec["paths"].get(p).is_some(), "{p}");
    }

    // Bad input: a clear error naming the parameter, never a wrong answer.
    let long = "1".repeat(65);
    for (path, status, says) in [
        ("/lookup/number", 400, "n parameter is missing"),
        ("/lookup/number?n=", 400, "n parameter is missing"),
        ("/lookup/number?n=anonymous", 400, "has no digits"),
        (&format!("/lookup/number?n={long}")[..], 400, "longer than 64"),
        ("/lookup/number?n=123&format=xml", 400, "format="),
        ("/lookup/number?n=123&book=nope", 404, "no address book named"),
        ("/lookup/search?q=an&limit=0", 400, "limit="),
        ("/lookup/search?q=an&limit=many", 400, "limit="),
        ("/lookup/search", 400, "q parameter"),
        (&format!("/photo/{ANNA}.jpg?size=4")[..], 400, "size="),
        ("/photo/not-a-guid.jpg", 404, "/photo/<objectGUID>.jpg"),
        ("/lookup/elsewhere", 404, "/lookup/"),
    ] {
        let a = server.get(path, &[]);
        assert_eq!(a.status, status, "{path}: {}", a.text());
        assert!(
            a.json()["error"].as_str().unwrap().contains(says),
            "{path}: {}",
            a.text()
        );
    }
    // A dialplan asking in text gets an empty body on every error, never a message shown as a caller's name.
    let a = server.get("/lookup/number?n=anonymous&format=text", &[]);
    assert_eq!((a.status, a.text().as_str()), (400, ""));
    // The listener's accounts apply.
    assert_eq!(curl(&[&server.url("/lookup/number?n=030+5550100")]).status, 401);
    assert_eq!(
        curl(&["-u", "pbx:wrong", &server.url("/lookup/number?n=030+5550100")]).status,
        401
    );
    assert_eq!(server.get("/lookup/number?n=1", &["-X", "POST"]).status, 405);

    // A change in Entra reaches the next lookup: no answer outlives its snapshot.
    assert_eq!(
        sim(
            sim_port,
            "PATCH",
            &format!("/_sim/users/{ANNA}"),
            &json!({"businessPhones": ["030 5550111"]})
        ),
        200
    );
    let pid = server._proc.0.id().to_string();
    assert!(Command::new("kill").args(["-USR1", &pid]).status().unwrap().success());
    wait_for("the new number", Duration::from_secs(30), || {
        server.number("030 5550111", &[]).status == 200
    });
    assert_eq!(server.number("030 5550111", &[]).json()["objectGUID"], ANNA);
    assert_eq!(server.number("030 5550100", &[]).status, 404, "the old number is gone");
}

/// `deploy/3cx/entradir.xml` as 3CX reads it: its parameters filled in, its request URL with the caller's number
/// as 3CX puts it in (`AsIs`: unencoded, `+` included), its Basic credentials; the answer must satisfy its rule
/// and hold every path its variables read, and the photo and contact links it outputs must open.
fn three_cx_template(server: &Server) {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/3cx/entradir.xml");
    let text = std::fs::read_to_string(file).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    let tag = |name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name(name))
            .unwrap_or_else(|| panic!("{file} has <{name}>"))
    };
    let params = [
        ("[ServerUrl]", server.url("")),
        ("[User]", "pbx".to_string()),
        ("[Password]", PASSWORD.to_string()),
        ("[Number]", "+49305550100".to_string()),
    ];
    let fill = |s: &str| params.iter().fold(s.to_string(), |s, (k, v)| s.replace(k, v));
    for (k, _) in &params[..3] {
        let name = &k[1..k.len() - 1];
        assert!(
            doc.descendants()
                .any(|n| n.has_tag_name("Parameter") && n.attribute("Name") == Some(name)),
            "{file} declares {name}"
        );
    }
    let request = tag("Request");
    assert_eq!(request.attribute("RequestType"), Some("Get"));
    let url = fill(request.attribute("Url").unwrap());
    let auth = fill(
        tag("Authentication")
            .children()
            .find(|n| n.has_tag_name("Value"))
            .unwrap()
            .text()
            .unwrap(),
    );
    let answer = curl(&["-u", &auth, &url]);
    assert_eq!(answer.status, 200, "{url}: {}", answer.text());
    let v = answer.json();
    let rule = tag("Rule").text().unwrap();
    assert!(v[rule].is_string(), "the rule field {rule} in {v}");
    let mut vars = Vec::new();
    for var in doc.descendants().filter(|n| n.has_tag_name("Variable")) {
        let path = var.attribute("Path").unwrap();
        let value = v[path].as_str().unwrap_or_else(|| panic!("{path} is a string in {v}"));
        vars.push((format!("[{}]", var.attribute("Name").unwrap()), value.to_string()));
    }
    let output = |ty: &str| {
        let o = doc
            .descendants()
            .find(|n| n.has_tag_name("Output") && n.attribute("Type") == Some(ty))
            .unwrap_or_else(|| panic!("{file} outputs {ty}"));
        let with_vars = vars
            .iter()
            .fold(o.attribute("Value").unwrap().to_string(), |s, (k, val)| {
                s.replace(k, val)
            });
        fill(&with_vars)
    };
    assert_eq!(output("FirstName"), "Anna");
    assert_eq!(output("LastName"), "Lookup");
    assert_eq!(output("CompanyName"), "Contoso GmbH");
    assert_eq!(output("PhoneBusiness"), "+49305550100");
    let photo = curl(&["-u", &auth, &output("PhotoUrl")]);
    assert_eq!(photo.status, 200, "{}", output("PhotoUrl"));
    let card = curl(&["-u", &auth, &output("ContactUrl")]);
    assert_eq!(card.status, 200, "{}: {}", output("ContactUrl"), card.text());
    assert!(card.text().contains("FN:Anna Lookup"), "{}", card.text());
    // A caller nobody has: no answer that satisfies the rule.
    let stranger = curl(&["-u", &auth, &url.replace("+49305550100", "+49309999999")]);
    assert_eq!(stranger.status, 404);
    assert!(stranger.json()[rule].is_null());
}
