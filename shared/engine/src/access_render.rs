//! The access review's CSV and HTML (issue 15 item 1); JSON is [`AccessReport`]'s serde form.
//!
//! CSV: one table, one row per grant (`section = grant`) and per orphan account (`section =
//! orphan`), with the snapshot time and ledger range on every row, so a spreadsheet filter
//! keeps the provenance. The columns are [`CSV_COLUMNS`], in that order; they do not change.
//!
//! HTML: one self-contained page (inline CSS and JS, no external asset, nothing fetched): the
//! people, the grants with their drift, and the orphans, each table sortable by a click on a
//! column header and filtered by the text box. The URL's fragment can carry the same actions
//! (`#q=TEXT&click=TABLE:COLUMN[,TABLE:COLUMN]`: type TEXT in the box, click those headers in
//! order), so a link shows a filtered, sorted view.

use crate::access::AccessReport;
use std::fmt::Write as _;

/// The CSV header.
pub const CSV_COLUMNS: [&str; 16] = [
    "section",
    "subject",
    "email",
    "idp_status",
    "idp_groups",
    "target",
    "kind",
    "name",
    "value",
    "rule",
    "wanted",
    "had",
    "drift",
    "reason",
    "snapshot_at",
    "ledger_seqs",
];

/// RFC 4180 quoting; a cell starting with `=`, `+`, `-` or `@` gets a leading `'` so a
/// spreadsheet never runs it as a formula (a Looker user's email is attacker-chosen text).
fn cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn had(h: Option<bool>) -> &'static str {
    match h {
        Some(true) => "true",
        Some(false) => "false",
        None => "unknown",
    }
}

fn seqs(r: &AccessReport) -> String {
    match (r.ledger.first_seq, r.ledger.last_seq) {
        (Some(a), Some(b)) => format!("{a}-{b}"),
        _ => String::new(),
    }
}

/// The review as CSV.
pub fn csv(r: &AccessReport) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push('\n');
    let snapshot = r.snapshot_at.map(|t| t.to_rfc3339()).unwrap_or_default();
    let seqs = seqs(r);
    let groups: std::collections::HashMap<&str, String> = r
        .people
        .iter()
        .map(|p| (p.subject.as_str(), p.idp_groups.join(";")))
        .collect();
    let mut line = |cells: [&str; 16]| {
        let v: Vec<String> = cells.iter().map(|c| cell(c)).collect();
        out.push_str(&v.join(","));
        out.push('\n');
    };
    for g in &r.grants {
        line([
            "grant",
            &g.subject,
            g.email.as_deref().unwrap_or(""),
            &g.idp_status,
            groups.get(g.subject.as_str()).map_or("", String::as_str),
            &g.target,
            &g.kind,
            &g.name,
            g.value.as_deref().unwrap_or(""),
            g.rule.as_deref().unwrap_or(""),
            if g.wanted { "true" } else { "false" },
            had(g.had),
            &g.drift,
            "",
            &snapshot,
            &seqs,
        ]);
    }
    for o in &r.orphans {
        line([
            "orphan",
            o.subject.as_deref().unwrap_or(""),
            o.email.as_deref().unwrap_or(""),
            "",
            "",
            &o.target,
            "account",
            &o.account,
            &o.grants.join(";"),
            "",
            "false",
            if o.enabled { "true" } else { "false" },
            "had-not-wanted",
            &o.reason,
            &snapshot,
            &seqs,
        ]);
    }
    out
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn table(out: &mut String, id: &str, title: &str, head: &[&str], rows: &[Vec<String>]) {
    let _ = write!(out, "<h2>{}</h2>\n<table id=\"{id}\">\n<thead><tr>", esc(title));
    for h in head {
        let _ = write!(out, "<th data-col=\"{}\">{}</th>", esc(h), esc(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{}</td>", esc(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:2em;width:100%}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#eee;cursor:pointer;user-select:none}
th[data-dir=asc]::after{content:' \\25B2'}th[data-dir=desc]::after{content:' \\25BC'}
tr[hidden]{display:none}
td:nth-child(n){white-space:nowrap}
.drift-wanted-not-had{background:#fde2e2}.drift-had-not-wanted{background:#fff3cd}
#q{font-size:15px;padding:4px;width:30em}
.meta{color:#555}";

/// Sort (click a header; again: reverse) and filter (every row whose text does not contain
/// the box's text is hidden); the fragment `#q=..&click=table:column,...` types and clicks.
const SCRIPT: &str = r#"(function(){
function cellText(r,i){return r.cells[i]?r.cells[i].textContent:'';}
function sortBy(table,col,dir){
  var ths=table.tHead.rows[0].cells,i=-1;
  for(var k=0;k<ths.length;k++){if(ths[k].dataset.col===col){i=k;}ths[k].removeAttribute('data-dir');}
  if(i<0){return;}
  ths[i].setAttribute('data-dir',dir);
  var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){var x=cellText(a,i),y=cellText(b,i);var c=x.localeCompare(y,undefined,{numeric:true});return dir==='desc'?-c:c;});
  rows.forEach(function(r){body.appendChild(r);});
}
function filter(q){
  q=q.toLowerCase();
  document.querySelectorAll('tbody tr').forEach(function(r){
    if(q===''||r.textContent.toLowerCase().indexOf(q)>=0){r.removeAttribute('hidden');}else{r.setAttribute('hidden','');}
  });
  document.querySelectorAll('table').forEach(function(t){
    var n=0;Array.prototype.forEach.call(t.tBodies[0].rows,function(r){if(!r.hasAttribute('hidden')){n++;}});
    t.setAttribute('data-shown',n);
  });
}
document.querySelectorAll('th').forEach(function(th){
  th.addEventListener('click',function(){
    var t=th.closest('table');sortBy(t,th.dataset.col,th.getAttribute('data-dir')==='asc'?'desc':'asc');
  });
});
document.querySelectorAll('td').forEach(function(td){
  if(td.textContent==='wanted-not-had'||td.textContent==='had-not-wanted'){td.parentNode.className='drift-'+td.textContent;}
});
var box=document.getElementById('q');
box.addEventListener('input',function(){filter(box.value);});
filter('');
var h=new URLSearchParams(location.hash.slice(1));
if(h.get('q')){box.value=h.get('q');box.dispatchEvent(new Event('input'));}
(h.get('click')||'').split(',').filter(Boolean).forEach(function(c){
  var p=c.split(':'),t=document.getElementById(p[0]);
  if(t){t.tHead.querySelectorAll('th').forEach(function(th){if(th.dataset.col===p[1]){th.click();}});}
});
document.body.setAttribute('data-ready','1');
})();"#;

/// The review as one self-contained HTML page.
pub fn html(r: &AccessReport) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    out.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n");
    let _ = write!(
        out,
        "<title>Gatehouse access review {}</title>\n<style>{STYLE}</style></head><body>\n",
        esc(&r.as_of.to_rfc3339())
    );
    let _ = write!(
        out,
        "<h1>Access review as of {}</h1>\n<p class=\"meta\">Snapshot: {}; ledger rows replayed on top: {} (seq {}; {} listed, not replayed). {} people, {} grants ({} with drift), {} orphan accounts.</p>\n",
        esc(&r.as_of.to_rfc3339()),
        esc(&r
            .snapshot_at
            .map_or("none (no reconcile yet)".into(), |t| t.to_rfc3339())),
        r.ledger.replayed,
        esc(&match seqs(r) {
            s if s.is_empty() => "none".into(),
            s => s,
        }),
        r.ledger.not_replayed,
        r.people.len(),
        r.grants.len(),
        r.grants
            .iter()
            .filter(|g| g.drift == "wanted-not-had" || g.drift == "had-not-wanted")
            .count(),
        r.orphans.len(),
    );
    out.push_str(
        "<p><label>Filter: <input id=\"q\" type=\"search\" placeholder=\"text in any column\"></label></p>\n",
    );
    let people: Vec<Vec<String>> = r
        .people
        .iter()
        .map(|p| {
            vec![
                p.subject.clone(),
                p.email.clone().unwrap_or_default(),
                p.idp_status.clone(),
                p.idp_groups.join(", "),
            ]
        })
        .collect();
    table(
        &mut out,
        "people",
        "People",
        &["subject", "email", "idp_status", "idp_groups"],
        &people,
    );
    let grants: Vec<Vec<String>> = r
        .grants
        .iter()
        .map(|g| {
            vec![
                g.email.clone().unwrap_or_default(),
                g.idp_status.clone(),
                g.target.clone(),
                g.kind.clone(),
                g.name.clone(),
                g.value.clone().unwrap_or_default(),
                g.rule.clone().unwrap_or_default(),
                g.wanted.to_string(),
                had(g.had).into(),
                g.drift.clone(),
            ]
        })
        .collect();
    table(
        &mut out,
        "grants",
        "Grants",
        &[
            "email",
            "idp_status",
            "target",
            "kind",
            "name",
            "value",
            "rule",
            "wanted",
            "had",
            "drift",
        ],
        &grants,
    );
    let orphans: Vec<Vec<String>> = r
        .orphans
        .iter()
        .map(|o| {
            vec![
                o.target.clone(),
                o.account.clone(),
                o.email.clone().unwrap_or_default(),
                o.enabled.to_string(),
                o.grants.join(", "),
                o.reason.clone(),
            ]
        })
        .collect();
    table(
        &mut out,
        "orphans",
        "Orphan accounts",
        &["target", "account", "email", "enabled", "grants", "reason"],
        &orphans,
    );
    let _ = write!(out, "<script>{SCRIPT}</script>\n</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_never_formulas() {
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("plain"), "plain");
    }

    #[test]
    fn html_escapes_what_it_shows() {
        assert_eq!(esc("<script>&'\""), "&lt;script&gt;&amp;&#39;&quot;");
    }
}
