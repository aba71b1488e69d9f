//! Equivalence: every draft and subscriber below renders byte for byte the same
//! through the cache as through the full `render`, whether the cache could be used or
//! not; and the common shapes do use it.

use super::super::{BodyFormat, Draft, Link, Rendered, render};
use super::{Compiled, RenderCache};
use serde_json::{Value, json};

const BENCH_BODY: &str = r#"# Hello {{ subscriber.first_name | default("friend") }},

안녕하세요 **{{ subscriber.name | default("구독자") }}**님! Here is what changed this week.

- [The spring sale](https://shop.example/spring?utm_source=newsletter "purchase") starts Monday
- Read [how we plan content](https://blog.example/posts/content-calendar "topic:marketing")
- Your account: [settings](https://app.example/account)

{% if subscriber.fields.plan == "pro" %}As a **Pro** member you get early access.{% else %}Upgrade to Pro for early access.{% endif %}

> 봄 세일은 3월 31일까지입니다. Questions? Just reply to this mail.

Thanks for reading,
The Loopline team
"#;

/// Merge data shaped like the sender's.
fn data(name: &str, lang: &str, plan: &str, n: &str) -> Value {
    json!({
        "subscriber": {
            "email": "a@example.com",
            "name": name,
            "first_name": name.split_whitespace().next().unwrap_or(""),
            "language": lang,
            "fields": {"plan": plan, "n": n},
        },
        "unsubscribe_url": "https://app.example/u/tok?x=1&y=2",
        "preferences_url": "https://app.example/p/tok",
    })
}

const NAMES: &[&str] = &[
    "김민준 3",
    "Ann Lee 1",
    "Zoë",
    "",
    "   ",
    "O'Brien",
    "<script>alert(1)</script>",
    "a & b",
    "Tom \"T\" <t@x.example>",
    "1",
    "12",
    " padded ",
    "Ann  Lee",
    "Ann\nLee",
    "x&amp;y",
    "nbsp\u{a0}here",
    "[win](https://evil.example)",
    "# Not a heading",
    "**bold**",
    "e\u{301}",
    "😀",
    "\u{1001D}\u{1000D}\u{1000D}\u{1000D}\u{1000D}\u{1001E}",
    "\u{E000}",
    "कुमार",
    "hidden",
    "amp",
    "b",
    "onclick",
    "ann",
    "이서연",
];

fn tracker(l: &Link) -> Option<String> {
    Some(format!(
        "https://t.example/c/{}?p={}",
        l.position,
        l.url.len()
    ))
}

fn compiled(draft: &Draft) -> Compiled {
    Compiled::new(draft.clone()).unwrap()
}

fn same(draft: &Draft, data: &Value, cache: &RenderCache) {
    let mut calls = Vec::new();
    let cached = Compiled::new(draft.clone()).and_then(|c| {
        cache.render(&c, data, &mut |l| {
            calls.push(l.clone());
            tracker(l)
        })
    });
    let full = render(draft, data, &mut tracker);
    match (cached, full) {
        (Ok(c), Ok(f)) => {
            let fields = |r: &Rendered| {
                (
                    r.subject.clone(),
                    r.preheader.clone(),
                    r.html.clone(),
                    r.text.clone(),
                    r.links.clone(),
                )
            };
            assert!(
                fields(&c) == fields(&f),
                "{:?} with {data}:\n--- cached\n{}\n{}\n--- full\n{}\n{}",
                draft.body,
                c.html,
                c.text,
                f.html,
                f.text
            );
            // Every tracked link was asked for (maybe twice when it fell back).
            for l in &f.links {
                assert!(calls.contains(l), "{l:?} not tracked");
            }
        }
        (Err(c), Err(f)) => assert_eq!(c.to_string(), f.to_string()),
        (c, f) => panic!(
            "{:?}: cached {:?} vs full {:?}",
            draft.body,
            c.is_ok(),
            f.is_ok()
        ),
    }
}

/// Renders every name (twice, so kept skeletons are used) both ways; returns the hits.
fn check(format: BodyFormat, subject: &str, preheader: &str, body: &str) -> u64 {
    let draft = Draft {
        subject: subject.into(),
        preheader: preheader.into(),
        body: body.into(),
        format,
    };
    let cache = RenderCache::new(64);
    for round in 0..2 {
        for (i, name) in NAMES.iter().enumerate() {
            let lang = ["ko", "en", "", "ko-KR"][(i + round) % 4];
            let plan = ["pro", "free"][i % 2];
            same(&draft, &data(name, lang, plan, name), &cache);
        }
    }
    // Without footer links, and without any data.
    same(&draft, &json!({"subscriber": {"name": "Ann"}}), &cache);
    same(&draft, &json!({}), &cache);
    cache.hits()
}

#[test]
fn the_bench_body_is_cached_and_identical() {
    let hits = check(
        BodyFormat::Markdown,
        r#"{{ subscriber.first_name | default("friend") }}님, this week at Loopline"#,
        r#"Three things worth your time, {{ subscriber.name | default("friend") }}"#,
        BENCH_BODY,
    );
    assert!(hits >= 10, "{hits}");
}

#[test]
fn markdown_bodies_are_identical() {
    let bodies = [
        // Links with labels and titles, images, the footer links used in the body.
        r#"[Buy](https://shop.example/x "purchase") for {{ subscriber.name }}, [Plain](https://a.example/ "A title") ![logo](https://img.example/l.png "logo")

[Leave]({{ unsubscribe_url }}) <a href="{{ preferences_url }}">prefs</a> [Top](#top) [Mail](mailto:a@example.com)"#,
        // A link whose whole text is a value (blank: no text, so only the URL in the text part).
        "[{{ subscriber.name }}](https://x.example/a) and [x](https://x.example/{{ subscriber.name }})",
        "[a](https://x.example/a \"{{ subscriber.name }}\") ![{{ subscriber.name }}](https://img.example/{{ subscriber.fields.plan }}.png \"{{ subscriber.name }}\")",
        // Emphasis, code, a table, a heading, a quote, a list.
        "**{{ subscriber.name }}** _{{ subscriber.name }}_ ~~{{ subscriber.name }}~~ `{{ subscriber.name }}`\n\n\
         | a | b |\n|---|---|\n| {{ subscriber.name }} | x |\n\n## {{ subscriber.name }}\n\n> {{ subscriber.name }}\n\n- {{ subscriber.name }}\n- two",
        // A value alone on a line (blank: a paragraph break), at the start of a line.
        "Hi\n{{ subscriber.name }}\nthere\n\n{{ subscriber.name }}\n\n    {{ subscriber.name }}",
        // List markers and fenced code info strings.
        "{{ subscriber.fields.n }}. item\n\n{{ subscriber.fields.n }}) other\n\n```{{ subscriber.name }}\ncode {{ subscriber.name }}\n```",
        // Entities, tags and references made of a value and the text around it.
        "&{{ subscriber.name }}; &#{{ subscriber.fields.n }}; <{{ subscriber.name }}> </{{ subscriber.name }}> x{{ subscriber.name }}",
        "[{{ subscriber.name }}] and [see][{{ subscriber.name }}]\n\n[ann]: https://ref.example/",
        "Dear {{ subscriber.name }}, <b class=\"x\">bold</b> {{ subscriber.name }} <a {{ subscriber.name }}>",
        // Filters, loops and conditions on values.
        "{{ subscriber.name | upper }} {{ subscriber.name | length }} {% for i in range(3) %}{{ subscriber.name }} {% endfor %}\
         {% if subscriber.name %}**{{ subscriber.name }}**{% else %}*friend*{% endif %}",
        // Output captured into values: never cached.
        "{% set g %}Hi {{ subscriber.name }}{% endset %}{{ g | upper }} {{ g | length }}\
         {% filter upper %}{{ subscriber.name }}{% endfilter %}",
        // Author HTML and style inside Markdown.
        "Hi {{ subscriber.name }}\n\n<div style=\"color: red\">{{ subscriber.name }}</div>\n\n<style>p { color: green }</style>",
        "{{ subscriber.name }}님 안녕하세요, {{ subscriber.first_name | default(\"구독자\") }}님!",
        "",
    ];
    let mut hits = 0;
    for body in bodies {
        hits += check(
            BodyFormat::Markdown,
            "Hi {{ subscriber.name }}",
            "{{ subscriber.first_name }}",
            body,
        );
    }
    assert!(hits > 0);
}

#[test]
fn html_bodies_are_identical() {
    let bodies = [
        // Author style, unbalanced markup, a table with text outside its cells.
        "<style>p { color: red } .x b { font-weight: 700 }</style><div><p class=\"x\">Hi <b>{{ subscriber.name }}</b>\
         <table><td>{{ subscriber.name }}</td> {{ subscriber.name }}<p>{{ subscriber.name }}",
        // Style selecting on attribute values: not cached.
        "<style>a[href^=\"https://t.example\"] { color: red }</style><p>{{ subscriber.name }} <a href=\"https://x.example/\">go</a></p>",
        // Values in attributes, comments, scripts, titles, text areas, pre.
        "<a href=\"https://x.example/?n={{ subscriber.name }}\" title=\"{{ subscriber.name }}\" data-label=\"x{{ subscriber.fields.n }}\">{{ subscriber.name }}</a>\
         <!-- {{ subscriber.name }} --><script>var n = \"{{ subscriber.name }}\";</script><title>{{ subscriber.name }}</title>\
         <textarea>{{ subscriber.name }}</textarea><pre>  {{ subscriber.name }}  x</pre><img alt=\"{{ subscriber.name }}\" src=\"x.png\">",
        // Entities and tags around values.
        "<p>&amp{{ subscriber.name }} &{{ subscriber.name }}; <{{ subscriber.name }}> <b{{ subscriber.name }}>x</b> <!{{ subscriber.name }}></p>",
        // Links tracked, untracked, with labels, with spaces, to the footer.
        "<p><a href=\"https://x.example/a\" data-label=\"purchase\" class=\"btn\">{{ subscriber.name }}</a> <a href=\" https://x.example/b \">b</a>\
         <a href=\"https://x.example/c\" data-no-track>c</a> <a href=\"{{ unsubscribe_url }}\">leave</a> <a>none</a> <a href=\"tel:+1\">call</a></p>",
        // A pasted full document.
        "<!doctype html><html><head><title>T</title></head><body><p>Hi {{ subscriber.name }}</p></body></html>",
        "{% if subscriber.fields.plan == \"pro\" %}<div class=\"pro\">{{ subscriber.name }}</div>{% else %}<p>{{ subscriber.name }}</p>{% endif %}",
        "<table><input type=\"{{ subscriber.name }}\"><tr><td>{{ subscriber.name }}</td></tr></table><img alt=\"{{ subscriber.name }}\" title=\"{{ subscriber.name }}\" src=\"y.png\">",
        "<link rel=\"stylesheet\" href=\"https://css.example/a.css\"><p>{{ subscriber.name }}</p>",
    ];
    let mut hits = 0;
    for body in bodies {
        hits += check(
            BodyFormat::Html,
            "R&D for {{ subscriber.name }}",
            "Only {{ subscriber.name }} & friends",
            body,
        );
    }
    assert!(hits > 0);
}

#[test]
fn values_that_are_not_plain_are_escaped_not_cached() {
    let draft = Draft {
        subject: "Hi {{ subscriber.name }}".into(),
        preheader: String::new(),
        body: "<p>Hello {{ subscriber.name }}!</p>".into(),
        format: BodyFormat::Html,
    };
    let cache = RenderCache::new(8);
    let evil = r#"<script>alert(1)</script><img src=x onerror=alert(1)> x" onmouseover="alert(1)"#;
    for name in ["Ann", evil, "Bob", evil] {
        let r = cache
            .render(
                &compiled(&draft),
                &data(name, "en", "free", ""),
                &mut tracker,
            )
            .unwrap();
        let doc = scraper::Html::parse_document(&r.html);
        let injected = scraper::Selector::parse("script, img, [onerror], [onmouseover]").unwrap();
        assert_eq!(doc.select(&injected).count(), 0, "{}", r.html);
        if name == evil {
            assert!(
                r.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
                "{}",
                r.html
            );
        }
    }
    // Ann filled the skeleton, Bob used it; the script went the full way.
    assert_eq!(cache.hits(), 1);
    assert_eq!(cache.len(), 1);
}

#[test]
fn the_cache_starts_over_when_full() {
    let cache = RenderCache::new(2);
    for i in 0..5 {
        let draft = Draft {
            subject: format!("S{i}"),
            preheader: String::new(),
            body: format!("Body {i} {{{{ subscriber.name }}}}"),
            format: BodyFormat::Markdown,
        };
        same(&draft, &data("Ann", "en", "free", ""), &cache);
        assert!(cache.len() <= 2);
    }
}

#[test]
fn render_if_cached_only_answers_from_a_kept_skeleton() {
    let draft = Draft {
        subject: "Hi {{ subscriber.name }}".into(),
        preheader: String::new(),
        body: BENCH_BODY.into(),
        format: BodyFormat::Markdown,
    };
    let cache = RenderCache::new(8);
    let ann = data("Ann", "en", "pro", "");
    let c = compiled(&draft);
    assert!(cache.render_if_cached(&c, &ann, &mut tracker).is_none());
    assert!(cache.is_empty());
    cache.render(&c, &ann, &mut tracker).unwrap();
    let bob = data("Bob Stone 7", "en", "pro", "");
    let cached = cache
        .render_if_cached(&c, &bob, &mut tracker)
        .expect("kept")
        .unwrap();
    assert_eq!(
        cached.html,
        render(&draft, &bob, &mut tracker).unwrap().html
    );
    // Another branch of the `{% if %}` is another skeleton, not yet kept.
    let free = data("Bob", "en", "free", "");
    assert!(cache.render_if_cached(&c, &free, &mut tracker).is_none());
}
