//! Every string Loopline's pages show, in one place: one table per language, all of the
//! same shape (`Strings` for the dashboard, `PublicStrings` for the pages subscribers
//! see), so a string missing from a translation is a compile error, never an English
//! fallback at run time. Templates read them through `chrome.t` / `p`.
//!
//! Which table a request gets: [`Lang`] from a stored choice (the subscriber's
//! `language`, the dashboard user's), else from the `Accept-Language` header, else
//! English. The mail Loopline writes itself has its own texts in `delivery::system`.

use std::convert::Infallible;

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, header, request::Parts},
};

/// A language Loopline's pages are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Ko,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Ko];

    /// The BCP 47 code, as stored and as written into `<html lang>`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ko => "ko",
        }
    }

    /// The language's name in itself, for language pickers.
    pub fn native_name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::Ko => "한국어",
        }
    }

    /// A language tag (`ko`, `ko-KR`, `EN_us`) read by its primary subtag; `None` for a
    /// language Loopline has no pages in.
    pub fn from_tag(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next().unwrap_or("");
        Lang::ALL
            .into_iter()
            .find(|l| primary.eq_ignore_ascii_case(l.code()))
    }

    /// The supported language the `Accept-Language` header prefers most: highest
    /// q-value first, the header's order among equals; `q=0` means "not this one".
    /// Unreadable entries are skipped; `*` picks nothing (the default applies).
    pub fn from_accept_language(header: &str) -> Option<Lang> {
        let mut best: Option<(Lang, u16)> = None;
        for item in header.split(',').take(64) {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("").trim();
            let mut q = Some(1000u16);
            for param in parts {
                if let Some((k, v)) = param.split_once('=')
                    && k.trim().eq_ignore_ascii_case("q")
                {
                    q = parse_qvalue(v.trim());
                }
            }
            let (Some(q), Some(lang)) = (q, Lang::from_tag(tag)) else {
                continue;
            };
            if q > 0 && best.is_none_or(|(_, b)| q > b) {
                best = Some((lang, q));
            }
        }
        best.map(|(l, _)| l)
    }

    /// The language named by a request's `Accept-Language` header, if any.
    pub fn from_headers(headers: &HeaderMap) -> Option<Lang> {
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .and_then(Lang::from_accept_language)
    }

    /// The first language found among `choices` (most wanted first), else English.
    pub fn pick(choices: impl IntoIterator<Item = Option<Lang>>) -> Lang {
        choices.into_iter().flatten().next().unwrap_or(Lang::En)
    }
}

/// An RFC 9110 qvalue (`0`, `0.5`, `1.000`) in thousandths; `None` if malformed.
fn parse_qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if !matches!(int, "0" | "1") || frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{frac:0<3}").parse::<u16>().ok()?;
    let q = if int == "1" {
        1000 + thousandths
    } else {
        thousandths
    };
    (q <= 1000).then_some(q)
}

/// The language a signed-in user's dashboard speaks, as the guard decided it.
#[derive(Debug, Clone, Copy)]
pub struct UiLang(pub Lang);

/// The language the request's `Accept-Language` header asks for, if Loopline has it.
pub struct AcceptLanguage(pub Option<Lang>);

impl<S: Send + Sync> FromRequestParts<S> for AcceptLanguage {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(AcceptLanguage(Lang::from_headers(&parts.headers)))
    }
}

pub struct Strings {
    pub lang: Lang,
    pub app_name: &'static str,
    pub tagline: &'static str,
    pub nav_dashboard: &'static str,
    pub nav_calendar: &'static str,
    pub nav_audience: &'static str,
    pub nav_campaigns: &'static str,
    pub nav_automations: &'static str,
    pub nav_insights: &'static str,
    pub nav_settings: &'static str,
    pub soon: &'static str,
    pub sign_out: &'static str,
    pub signed_in_as: &'static str,
    pub email: &'static str,
    pub password: &'static str,
    pub password_confirm: &'static str,
    pub password_hint: &'static str,
    pub current_password: &'static str,
    pub new_password: &'static str,
    pub role: &'static str,
    pub setup_title: &'static str,
    pub setup_intro: &'static str,
    pub setup_submit: &'static str,
    pub login_title: &'static str,
    pub login_submit: &'static str,
    pub login_failed: &'static str,
    pub dashboard_title: &'static str,
    pub dashboard_welcome: &'static str,
    pub loop_title: &'static str,
    pub loop_steps: [&'static str; 6],
    pub getting_started: &'static str,
    pub jobs_title: &'static str,
    pub jobs_intro: &'static str,
    pub jobs_queued: &'static str,
    pub jobs_running: &'static str,
    pub jobs_done: &'static str,
    pub jobs_dead: &'static str,
    pub jobs_none: &'static str,
    pub jobs_kind: &'static str,
    pub jobs_status: &'static str,
    pub jobs_attempts: &'static str,
    pub jobs_run_at: &'static str,
    pub jobs_error: &'static str,
    pub jobs_progress: &'static str,
    pub jobs_retry: &'static str,
    pub users_title: &'static str,
    pub users_intro: &'static str,
    pub users_add: &'static str,
    pub users_add_submit: &'static str,
    pub users_change_role: &'static str,
    pub users_delete: &'static str,
    pub users_you: &'static str,
    pub users_created: &'static str,
    pub account_title: &'static str,
    pub account_change_password: &'static str,
    pub account_change_password_hint: &'static str,
    pub account_submit: &'static str,
    pub settings_title: &'static str,
    pub settings_account_blurb: &'static str,
    pub settings_users_blurb: &'static str,
    pub settings_jobs_blurb: &'static str,
    pub role_owner: &'static str,
    pub role_editor: &'static str,
    pub role_viewer: &'static str,
    pub area_coming: &'static str,
    pub area_calendar: &'static str,
    pub area_audience: &'static str,
    pub area_campaigns: &'static str,
    pub area_automations: &'static str,
    pub area_insights: &'static str,
    pub error_title: &'static str,
    pub error_back: &'static str,
    pub notice_password_changed: &'static str,
    pub notice_user_created: &'static str,
    pub notice_role_changed: &'static str,
    pub notice_user_deleted: &'static str,
    pub notice_job_retried: &'static str,
    pub notice_signed_out: &'static str,
    pub aud_title: &'static str,
    pub aud_search: &'static str,
    pub aud_filter: &'static str,
    pub aud_any_status: &'static str,
    pub aud_any_tag: &'static str,
    pub aud_any_stage: &'static str,
    pub aud_name: &'static str,
    pub aud_status: &'static str,
    pub aud_stage: &'static str,
    pub aud_created: &'static str,
    pub aud_none: &'static str,
    pub aud_next: &'static str,
    pub aud_forms: &'static str,
    pub aud_profile: &'static str,
    pub aud_fields: &'static str,
    pub aud_tags: &'static str,
    pub aud_consent: &'static str,
    pub aud_consent_method: &'static str,
    pub aud_consent_when: &'static str,
    pub aud_consent_form: &'static str,
    pub aud_consent_ip: &'static str,
    pub aud_source: &'static str,
    pub aud_language: &'static str,
    pub aud_timezone: &'static str,
    pub aud_timeline: &'static str,
    pub aud_no_events: &'static str,
    pub aud_links: &'static str,
    pub aud_unsubscribe: &'static str,
    pub aud_export: &'static str,
    pub aud_erase: &'static str,
    pub aud_erase_hint: &'static str,
    pub forms_intro: &'static str,
    pub forms_none: &'static str,
    pub forms_name: &'static str,
    pub forms_slug: &'static str,
    pub forms_single: &'static str,
    pub forms_tags: &'static str,
    pub forms_create: &'static str,
    pub forms_hosted: &'static str,
    pub forms_snippet: &'static str,
    pub forms_doi: &'static str,
    pub forms_soi: &'static str,
    pub forms_language: &'static str,
    /// The form-language choice "none": the visitor's browser decides.
    pub forms_language_auto: &'static str,
    pub forms_language_save: &'static str,
    pub lc_title: &'static str,
    pub lc_intro: &'static str,
    pub lc_new_days: &'static str,
    pub lc_active_days: &'static str,
    pub lc_churn_days: &'static str,
    pub lc_save: &'static str,
    pub settings_audience_blurb: &'static str,
    pub notice_unsubscribed: &'static str,
    pub notice_erased: &'static str,
    pub notice_settings_saved: &'static str,
    pub imp_title: &'static str,
    pub imp_intro: &'static str,
    pub imp_file: &'static str,
    pub imp_upload: &'static str,
    pub imp_export_all: &'static str,
    pub imp_added: &'static str,
    pub imp_updated: &'static str,
    pub imp_skipped: &'static str,
    pub imp_failed: &'static str,
    pub imp_not_imported: &'static str,
    pub imp_from: &'static str,
    pub imp_column: &'static str,
    pub imp_import_as: &'static str,
    pub imp_examples: &'static str,
    pub imp_mode: &'static str,
    pub imp_tags: &'static str,
    pub imp_start: &'static str,
    pub imp_report: &'static str,
    pub imp_line: &'static str,
    pub imp_value: &'static str,
    pub imp_reason: &'static str,
    pub imp_cancel: &'static str,
    pub aud_imports: &'static str,
    pub fields_title: &'static str,
    pub fields_custom: &'static str,
    pub fields_none: &'static str,
    pub fields_key: &'static str,
    pub fields_label: &'static str,
    pub fields_type: &'static str,
    pub fields_choices: &'static str,
    pub fields_add: &'static str,
    pub tags_intro: &'static str,
    pub tags_topic: &'static str,
    pub tags_toggle: &'static str,
    pub aud_fields_link: &'static str,
    pub bulk_title: &'static str,
    pub bulk_selected: &'static str,
    pub bulk_segment: &'static str,
    pub bulk_tag: &'static str,
    pub bulk_untag: &'static str,
    pub bulk_unsubscribe: &'static str,
    pub bulk_delete: &'static str,
    pub bulk_tag_name: &'static str,
    pub bulk_run: &'static str,
    pub notice_bulk_queued: &'static str,
    pub seg_title: &'static str,
    pub seg_name: &'static str,
    pub seg_count: &'static str,
    pub seg_new: &'static str,
    pub seg_match: &'static str,
    pub seg_all: &'static str,
    pub seg_any: &'static str,
    pub seg_advanced: &'static str,
    pub seg_preview: &'static str,
    pub seg_save: &'static str,
    pub aud_segments: &'static str,
    pub aud_any_segment: &'static str,
    pub nav_outbox: &'static str,
    pub out_title: &'static str,
    pub out_capture: &'static str,
    pub out_smtp: &'static str,
    pub out_empty: &'static str,
    pub out_to: &'static str,
    pub out_subject: &'static str,
    pub out_preheader: &'static str,
    pub out_body: &'static str,
    pub out_format: &'static str,
    pub out_status: &'static str,
    pub out_reply: &'static str,
    /// Shown as the reply of a message captured locally (no SMTP server to answer).
    pub out_captured_reply: &'static str,
    pub out_created: &'static str,
    pub out_sent: &'static str,
    pub out_purpose: &'static str,
    pub out_test_title: &'static str,
    pub out_test_hint: &'static str,
    pub out_send_test: &'static str,
    pub out_preview: &'static str,
    pub out_desktop: &'static str,
    pub out_mobile: &'static str,
    pub out_text_part: &'static str,
    pub out_raw: &'static str,
    pub out_older: &'static str,
    pub out_view: &'static str,
    pub out_test_queued: &'static str,
    pub out_test_already_queued: &'static str,
    pub account_language: &'static str,
    pub account_language_hint: &'static str,
    pub account_language_save: &'static str,
    pub notice_language_saved: &'static str,
    /// Names of statuses and stages (subscribers, lifecycle, jobs, imports, messages).
    pub states: StateLabels,
    /// The label of the main navigation, for screen readers.
    pub nav_label: &'static str,
    pub bulk_scope_label: &'static str,
    pub bulk_action_label: &'static str,
    pub seg_condition_label: &'static str,
    pub seg_what_label: &'static str,
    pub seg_comparison_label: &'static str,
    pub seg_value_label: &'static str,
    pub seg_arg_hint: &'static str,
    /// The builder's condition kinds, in the order of `SEG_KIND_KEYS`.
    pub seg_kinds: [&'static str; 11],
    /// Field comparisons, in the order of `SEG_OP_KEYS`.
    pub seg_ops: [&'static str; 7],
    /// Custom field types: text, number, date, boolean, choice.
    pub field_types: [&'static str; 5],
    /// Import modes: add and update, add only, update only.
    pub imp_modes: [&'static str; 3],
    /// Import column targets: skip, email, name, first name, last name, status,
    /// subscribed at, tags.
    pub imp_targets: [&'static str; 8],
    pub imp_field_target: fn(&str) -> String,
    pub imp_size: fn(i64) -> String,
    /// Text before and after the number of subscribers in the list.
    pub aud_total_around: [&'static str; 2],
    /// Text before and after the number of subscribers a segment matches.
    pub seg_matching_around: [&'static str; 2],
    pub out_sample_subject: &'static str,
    pub out_sample_body: &'static str,
    pub out_purposes: PurposeLabels,
    pub events: EventLabels,
    pub consent_double: &'static str,
    pub consent_single: &'static str,
    pub consent_import: &'static str,
    /// A status code's name on error pages.
    pub status_name: fn(u16) -> &'static str,
    pub err_not_found: &'static str,
    pub err_forbidden: &'static str,
    pub err_csrf: &'static str,
    pub err_internal: &'static str,
    pub err_unavailable: &'static str,
    /// A request the framework refused (status, its English words): what to show.
    pub err_rejected: fn(u16, &str) -> String,
    /// The reason an import row was not imported, on the page (`code`, English text).
    pub imp_reason_text: fn(ReportCode, &str) -> String,
    pub imp_reasons: ReportReasons,
    pub problems: ProblemTexts,
    pub failures: FailureTexts,
}

/// Names of the kinds of mail in the outbox.
pub struct PurposeLabels {
    pub test: &'static str,
    pub confirmation: &'static str,
    pub data_request: &'static str,
}

/// Names of timeline events; an unknown kind shows as its code.
pub struct EventLabels {
    pub subscribed: &'static str,
    pub confirmed: &'static str,
    pub signup_again: &'static str,
    pub unsubscribed: &'static str,
    pub bounced: &'static str,
    pub complained: &'static str,
    pub sent: &'static str,
    pub deferred: &'static str,
    pub failed: &'static str,
    pub delivered: &'static str,
    pub opened: &'static str,
    pub clicked: &'static str,
    pub converted: &'static str,
    pub imported: &'static str,
    pub import_updated: &'static str,
    pub tagged: &'static str,
    pub untagged: &'static str,
    pub preferences_changed: &'static str,
}

pub use crate::audience::import::{ImportFailure, ReportCode};

/// What the import page says for each report code (the CSV keeps the English detail).
pub struct ReportReasons {
    pub email: &'static str,
    pub duplicate: &'static str,
    pub value: &'static str,
    pub name: &'static str,
    pub unreadable: &'static str,
    pub erased: &'static str,
    pub exists: &'static str,
    pub missing: &'static str,
    pub changed: &'static str,
}

/// The words for every [`Problem`](crate::Problem); `fn` entries put numbers and names
/// where the language wants them.
pub struct ProblemTexts {
    pub form_too_large: &'static str,
    pub form_unreadable: &'static str,
    pub upload_unreadable: &'static str,
    pub upload_interrupted: &'static str,
    /// (the limit in MiB)
    pub upload_too_large: fn(u64) -> String,
    pub file_empty: &'static str,
    pub choose_file: &'static str,
    pub already_exists: &'static str,
    pub still_referenced: &'static str,
    pub invalid_values: &'static str,
    pub already_set_up: &'static str,
    pub user_email_taken: &'static str,
    pub user_email_length: &'static str,
    pub wrong_current_password: &'static str,
    pub last_owner: &'static str,
    pub cannot_remove_self: &'static str,
    pub choose_role: &'static str,
    pub choose_language: &'static str,
    pub sign_in_throttled: fn(i64) -> String,
    pub password_too_short: fn(usize) -> String,
    pub password_too_long: fn(usize) -> String,
    pub password_mismatch: &'static str,
    pub job_not_failed: &'static str,
    pub choose_action: &'static str,
    pub choose_segment: &'static str,
    pub bulk_needs_tag: &'static str,
    pub bulk_needs_selection: &'static str,
    pub lifecycle_range: &'static str,
    pub lifecycle_at_least_one_day: &'static str,
    pub lifecycle_churn_after_active: &'static str,
    pub field_key: &'static str,
    pub field_label: &'static str,
    pub field_type: &'static str,
    pub field_choices: &'static str,
    pub field_taken: &'static str,
    pub form_name: &'static str,
    pub form_slug: &'static str,
    pub form_slug_taken: &'static str,
    pub segment_name: &'static str,
    pub segment_taken: &'static str,
    pub seg_too_many: fn(usize) -> String,
    pub seg_too_deep: fn(usize) -> String,
    pub seg_no_field: fn(&str) -> String,
    pub seg_not_number: fn(&str) -> String,
    pub seg_not_date: fn(&str) -> String,
    pub seg_not_boolean: &'static str,
    /// (comparison, field type), both already named in this language.
    pub seg_op_does_not_apply: fn(&str, &str) -> String,
    pub seg_days: &'static str,
    pub seg_mails: &'static str,
    pub seg_need_label: &'static str,
    pub seg_need_event: &'static str,
    /// (row number, what is wrong with it).
    pub seg_row: fn(usize, &str) -> String,
    pub seg_row_status: &'static str,
    pub seg_row_stage: &'static str,
    pub seg_row_tag: &'static str,
    pub seg_row_comparison: &'static str,
    pub seg_row_days: &'static str,
    pub seg_row_mails: &'static str,
    pub seg_row_unknown: &'static str,
    /// (line, column) where the JSON stops making sense.
    pub seg_json: fn(usize, usize) -> String,
    pub import_unknown_choice: fn(usize) -> String,
    pub import_unknown_field: fn(usize) -> String,
    pub import_no_email: &'static str,
    pub import_email_twice: fn(usize, usize) -> String,
    /// (target, already named in this language; first column; second column).
    pub import_target_twice: fn(&str, usize, usize) -> String,
    pub import_started: &'static str,
    pub import_finished: &'static str,
    pub test_recipient: fn(&str) -> String,
    pub test_subject: &'static str,
}

/// Why an import or a job failed, and what a mail template's problem is: the words for
/// every [`ImportFailure`], [`JobFailure`](crate::jobs::JobFailure) and
/// [`RenderError`](crate::delivery::render::RenderError).
pub struct FailureTexts {
    /// The summary of the English technical detail shown under a worded failure.
    pub tech_detail: &'static str,
    pub imp_empty: &'static str,
    pub imp_spreadsheet: &'static str,
    pub imp_not_csv: &'static str,
    /// (line)
    pub imp_bad_header: fn(u64) -> String,
    pub imp_unreadable: &'static str,
    pub imp_interrupted: &'static str,
    pub imp_database: &'static str,
    pub imp_stopped: &'static str,
    pub imp_cancelled: &'static str,
    /// Names of the kinds of job (`audience.import`, `audience.bulk`).
    pub kind_import: &'static str,
    pub kind_bulk: &'static str,
    /// (kind, named) for the failures that say which job.
    pub job_failed: fn(&str) -> String,
    pub job_database: fn(&str) -> String,
    pub job_panicked: fn(&str) -> String,
    pub job_lease: fn(&str) -> String,
    pub job_unhandled: fn(&str) -> String,
    pub job_bad_payload: &'static str,
    /// (import id)
    pub job_import_gone: fn(i64) -> String,
    pub job_import_stopped: fn(i64) -> String,
    /// (segment id)
    pub job_segment_gone: fn(i64) -> String,
    pub job_segment_invalid: fn(i64) -> String,
    pub job_bulk_invalid: &'static str,
    /// After a failure that will be tried again.
    pub job_will_retry: &'static str,
    /// After the last failure (attempts made).
    pub job_gave_up: fn(i32) -> String,
    /// Subject, preheader, body.
    pub tpl_parts: [&'static str; 3],
    /// (part, line if known, what is wrong)
    pub tpl_at: fn(&str, Option<usize>, &str) -> String,
    pub tpl_syntax: &'static str,
    pub tpl_unknown_filter: &'static str,
    pub tpl_unknown_function: &'static str,
    pub tpl_unknown_test: &'static str,
    pub tpl_unknown_method: &'static str,
    pub tpl_undefined: &'static str,
    pub tpl_invalid_operation: &'static str,
    pub tpl_arguments: &'static str,
    pub tpl_other: &'static str,
    /// (part, limit in KiB)
    pub tpl_too_large: fn(&str, usize) -> String,
    /// (part)
    pub tpl_out_of_fuel: fn(&str) -> String,
    pub tpl_layout: &'static str,
}

/// What templates show for the status and stage codes stored in the database.
pub struct StateLabels {
    pub unconfirmed: &'static str,
    pub active: &'static str,
    pub unsubscribed: &'static str,
    pub bounced: &'static str,
    pub complained: &'static str,
    pub new: &'static str,
    pub at_risk: &'static str,
    pub churned: &'static str,
    pub queued: &'static str,
    pub running: &'static str,
    pub done: &'static str,
    pub dead: &'static str,
    pub uploaded: &'static str,
    pub failed: &'static str,
    pub cancelled: &'static str,
    pub sending: &'static str,
    pub sent: &'static str,
    pub suppressed: &'static str,
}

pub static EN: Strings = Strings {
    lang: Lang::En,
    app_name: "Loopline",
    tagline: "Plan, send, learn, repeat — one loop.",
    nav_dashboard: "Dashboard",
    nav_calendar: "Calendar",
    nav_audience: "Audience",
    nav_campaigns: "Campaigns",
    nav_automations: "Automations",
    nav_insights: "Insights",
    nav_settings: "Settings",
    soon: "soon",
    sign_out: "Sign out",
    signed_in_as: "Signed in as",
    email: "Email",
    password: "Password",
    password_confirm: "Repeat the password",
    password_hint: "At least 10 characters. A passphrase is easiest to remember.",
    current_password: "Current password",
    new_password: "New password",
    role: "Role",
    setup_title: "Set up Loopline",
    setup_intro: "Create the owner account. You can invite editors and viewers afterwards.",
    setup_submit: "Create owner account",
    login_title: "Sign in",
    login_submit: "Sign in",
    login_failed: "That email and password do not match an account.",
    dashboard_title: "Dashboard",
    dashboard_welcome: "Welcome back",
    loop_title: "The loop",
    loop_steps: [
        "Plan content in the calendar",
        "Send sequences, campaigns and RSS newsletters",
        "Collect opens, clicks, replies and purchases",
        "Tag behaviour and build segments",
        "Branch to the next step",
        "Revise what underperforms",
    ],
    getting_started: "Getting started",
    jobs_title: "Background jobs",
    jobs_intro: "Work Loopline does in the background: sends, imports, rules. Failed jobs retry with growing pauses; a job that keeps failing stops here for you to look at.",
    jobs_queued: "Queued",
    jobs_running: "Running",
    jobs_done: "Done",
    jobs_dead: "Failed",
    jobs_none: "Nothing waiting, running or failed.",
    jobs_kind: "Kind",
    jobs_status: "Status",
    jobs_attempts: "Attempts",
    jobs_run_at: "Next run",
    jobs_error: "Last error",
    jobs_progress: "Progress",
    jobs_retry: "Retry",
    users_title: "Users",
    users_intro: "Owners manage users and settings, editors change marketing work, viewers read.",
    users_add: "Add a user",
    users_add_submit: "Add user",
    users_change_role: "Change role",
    users_delete: "Remove",
    users_you: "you",
    users_created: "Added",
    account_title: "Your account",
    account_change_password: "Change password",
    account_change_password_hint: "Changing your password signs you out everywhere else.",
    account_submit: "Change password",
    settings_title: "Settings",
    settings_account_blurb: "Your password, sessions and language.",
    settings_users_blurb: "Who can sign in, and what they may do.",
    settings_jobs_blurb: "Background work: queued, running and failed jobs.",
    role_owner: "Owner",
    role_editor: "Editor",
    role_viewer: "Viewer",
    area_coming: "This area arrives with a later release. Here is what it will do:",
    area_calendar: "A content calendar: plan blog posts, mails and social posts per target segment (new, active, at-risk). Publishing an item sends it to the right people, and a new post in your RSS feed becomes a newsletter.",
    area_audience: "Subscribers, consent, signup forms, tags, custom fields and segments; import from MailerLite, Mailchimp, Kit or Brevo and export any segment.",
    area_campaigns: "One-off campaigns with Markdown or HTML, merge fields, previews at desktop and phone widths, test sends and A/B subjects.",
    area_automations: "Welcome sequences and behaviour branches: wait two days, check a click, tag, branch. Dry-run a whole flow before it touches a real subscriber.",
    area_insights: "Opens and clicks by people (not scanners), the steps that underperform, the best hour to send, and the A/B winners.",
    error_title: "Something is not right",
    error_back: "Back to the dashboard",
    notice_password_changed: "Password changed. Other sessions were signed out.",
    notice_user_created: "User added.",
    notice_role_changed: "Role changed.",
    notice_user_deleted: "User removed.",
    notice_job_retried: "The job is queued again.",
    notice_signed_out: "You are signed out.",
    aud_title: "Audience",
    aud_search: "Search email or name",
    aud_filter: "Filter",
    aud_any_status: "Any status",
    aud_any_tag: "Any tag",
    aud_any_stage: "Any stage",
    aud_name: "Name",
    aud_status: "Status",
    aud_stage: "Stage",
    aud_created: "Subscribed",
    aud_none: "No subscribers match.",
    aud_next: "Next page",
    aud_forms: "Signup forms",
    aud_profile: "Subscriber",
    aud_fields: "Fields",
    aud_tags: "Tags",
    aud_consent: "Consent",
    aud_consent_method: "How",
    aud_consent_when: "When",
    aud_consent_form: "Form",
    aud_consent_ip: "From address",
    aud_source: "Source",
    aud_language: "Language",
    aud_timezone: "Time zone",
    aud_timeline: "Timeline",
    aud_no_events: "Nothing has happened yet.",
    aud_links: "Links for this subscriber",
    aud_unsubscribe: "Unsubscribe",
    aud_export: "Export data (JSON)",
    aud_erase: "Erase personal data",
    aud_erase_hint: "Removes the address, name and fields for good; anonymous counts stay.",
    forms_intro: "Each form has a hosted page and an HTML snippet to paste into your site. Double opt-in is on unless you turn it off.",
    forms_none: "No forms yet.",
    forms_name: "Form name",
    forms_slug: "Address (the part after /f/)",
    forms_single: "Single opt-in (no confirmation mail)",
    forms_tags: "Tags to add (comma-separated)",
    forms_create: "Create form",
    forms_hosted: "Hosted page",
    forms_snippet: "Embed snippet",
    forms_doi: "Double opt-in",
    forms_soi: "Single opt-in",
    forms_language: "Language of the form",
    forms_language_auto: "The visitor's browser decides",
    forms_language_save: "Change language",
    lc_title: "Lifecycle stages",
    lc_intro: "Stages come from engagement (human opens and clicks). New: subscribed recently, no engagement yet. Active: engaged recently. At risk: quiet for a while. Churned: quiet for long.",
    lc_new_days: "New for (days)",
    lc_active_days: "Active if engaged within (days)",
    lc_churn_days: "Churned after no engagement for (days)",
    lc_save: "Save",
    settings_audience_blurb: "Lifecycle stage thresholds.",
    notice_unsubscribed: "Unsubscribed.",
    notice_erased: "The subscriber's personal data was erased.",
    notice_settings_saved: "Settings saved.",
    imp_title: "Import and export",
    imp_intro: "Upload a CSV exported from MailerLite, Mailchimp, Kit, Brevo or a spreadsheet (UTF-8, UTF-16 or EUC-KR/CP949). You confirm the columns before anything is imported; rows that cannot be imported are listed in a report.",
    imp_file: "File",
    imp_upload: "Upload and preview",
    imp_export_all: "Export everyone as CSV",
    imp_added: "Added",
    imp_updated: "Updated",
    imp_skipped: "Skipped",
    imp_failed: "Invalid",
    imp_not_imported: "Not imported",
    imp_from: "exported from",
    imp_column: "Column",
    imp_import_as: "Import as",
    imp_examples: "Examples",
    imp_mode: "Existing subscribers",
    imp_tags: "Tags for everyone in this file (comma-separated)",
    imp_start: "Start import",
    imp_report: "Download the report of rows not imported (CSV)",
    imp_line: "Line",
    imp_value: "Value",
    imp_reason: "Reason",
    imp_cancel: "Cancel import",
    aud_imports: "Import / export",
    fields_title: "Fields and tags",
    fields_custom: "Custom fields",
    fields_none: "No custom fields yet.",
    fields_key: "Key",
    fields_label: "Label",
    fields_type: "Type",
    fields_choices: "Choices (for a choice field, comma-separated)",
    fields_add: "Add field",
    tags_intro: "Tags are created on the fly by forms, imports and rules. Topics are the tags subscribers may choose on their preference page.",
    tags_topic: "Topic",
    tags_toggle: "switch",
    aud_fields_link: "Fields and tags",
    bulk_title: "With the ticked subscribers, or a whole segment",
    bulk_selected: "ticked subscribers",
    bulk_segment: "everyone in segment",
    bulk_tag: "Add tag",
    bulk_untag: "Remove tag",
    bulk_unsubscribe: "Unsubscribe",
    bulk_delete: "Delete",
    bulk_tag_name: "Tag",
    bulk_run: "Run",
    notice_bulk_queued: "The bulk action is running; its progress is below.",
    seg_title: "Segments",
    seg_name: "Segment name",
    seg_count: "Subscribers",
    seg_new: "New segment",
    seg_match: "Match",
    seg_all: "all of the conditions",
    seg_any: "any of the conditions",
    seg_advanced: "Advanced: definition as JSON (nested groups)",
    seg_preview: "Count",
    seg_save: "Save segment",
    aud_segments: "Segments",
    aud_any_segment: "Any segment",
    nav_outbox: "Outbox",
    out_title: "Outbox",
    out_capture: "No SMTP server is configured (SMTP_URL), so mail is captured here instead of being sent: this is exactly what would go out.",
    out_smtp: "Mail goes out through the configured SMTP server. Every message, its status and the server's reply are listed here.",
    out_empty: "No mail yet.",
    out_to: "To",
    out_subject: "Subject",
    out_preheader: "Preheader (preview text)",
    out_body: "Body",
    out_format: "Format",
    out_status: "Status",
    out_reply: "Server reply",
    out_captured_reply: "Captured here: no SMTP server is set, so nothing was sent.",
    out_created: "Queued",
    out_sent: "Sent",
    out_purpose: "Kind",
    out_test_title: "Write and test a message",
    out_test_hint: "Markdown, with merge fields like {{ subscriber.first_name or \"there\" }}. Label a link for segments and rules with a title: [Buy](https://shop.example \"purchase\").",
    out_send_test: "Send test",
    out_preview: "Preview",
    out_desktop: "Desktop",
    out_mobile: "Mobile",
    out_text_part: "Plain-text part",
    out_raw: "Download the raw message (.eml)",
    out_older: "Older",
    out_view: "View",
    out_test_queued: "Test message queued; it appears below once sent.",
    out_test_already_queued: "This form was already sent: its test message is queued once. Reload the page to send another.",
    account_language: "Language",
    account_language_hint: "The language the dashboard speaks to you in. Until you choose one, it follows your browser.",
    account_language_save: "Save language",
    notice_language_saved: "Language saved.",
    // English shows the codes themselves, as the pages always have.
    states: StateLabels {
        unconfirmed: "unconfirmed",
        active: "active",
        unsubscribed: "unsubscribed",
        bounced: "bounced",
        complained: "complained",
        new: "new",
        at_risk: "at-risk",
        churned: "churned",
        queued: "queued",
        running: "running",
        done: "done",
        dead: "dead",
        uploaded: "uploaded",
        failed: "failed",
        cancelled: "cancelled",
        sending: "sending",
        sent: "sent",
        suppressed: "suppressed",
    },
    nav_label: "Main",
    bulk_scope_label: "Which subscribers",
    bulk_action_label: "Action",
    seg_condition_label: "Condition",
    seg_what_label: "What",
    seg_comparison_label: "Comparison",
    seg_value_label: "Value",
    seg_arg_hint: "status / stage / tag id / field / days / label",
    seg_kinds: [
        "Status is",
        "Lifecycle stage is",
        "Has tag",
        "Does not have tag",
        "Field",
        "Opened within days",
        "Not opened within days",
        "Clicked within days",
        "Unopened mails in a row, at least",
        "Clicked a link labelled",
        "Event happened",
    ],
    seg_ops: [
        "is",
        "is not",
        "contains",
        "greater than",
        "less than",
        "is set",
        "is not set",
    ],
    field_types: ["text", "number", "date", "yes/no", "choice"],
    imp_modes: [
        "Add new and update existing",
        "Add new only (skip existing)",
        "Update existing only",
    ],
    imp_targets: [
        "— skip —",
        "Email",
        "Name",
        "First name",
        "Last name",
        "Status",
        "Subscribed at",
        "Tags",
    ],
    imp_field_target: |label| format!("Field: {label}"),
    imp_size: |n| {
        if n == 1 {
            "1 byte".to_string()
        } else {
            format!("{} bytes", group_digits(n))
        }
    },
    aud_total_around: ["", " subscribers in all"],
    seg_matching_around: ["", " subscribers match"],
    out_sample_subject: "{{ subscriber.first_name or \"Hello\" }}, this week's notes",
    out_sample_body: "Hello {{ subscriber.first_name or \"there\" }},\n\n[Read the post](https://example.com/blog \"topic:marketing\")\n",
    out_purposes: PurposeLabels {
        test: "test",
        confirmation: "confirmation",
        data_request: "data request",
    },
    events: EventLabels {
        subscribed: "subscribed",
        confirmed: "confirmed",
        signup_again: "signed up again",
        unsubscribed: "unsubscribed",
        bounced: "bounced",
        complained: "complained",
        sent: "sent",
        deferred: "deferred",
        failed: "failed",
        delivered: "delivered",
        opened: "opened",
        clicked: "clicked",
        converted: "converted",
        imported: "imported",
        import_updated: "updated by an import",
        tagged: "tagged",
        untagged: "untagged",
        preferences_changed: "changed preferences",
    },
    consent_double: "double opt-in",
    consent_single: "single opt-in",
    consent_import: "import",
    status_name: |code| {
        axum::http::StatusCode::from_u16(code)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("")
    },
    err_not_found: "not found",
    err_forbidden: "you do not have permission to do that",
    err_csrf: "the form expired or was sent from another site; reload the page and try again",
    err_internal: "something went wrong on our side; it has been logged",
    err_unavailable: "the service is not ready",
    err_rejected: |code, text| {
        if text.trim().is_empty() {
            axum::http::StatusCode::from_u16(code)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
                .to_lowercase()
        } else {
            text.to_string()
        }
    },
    imp_reason_text: |_, text| text.to_string(),
    imp_reasons: ReportReasons {
        email: "not a valid email address",
        duplicate: "the same address appears earlier in the file",
        value: "a value could not be read",
        name: "the name is too long or contains a NUL character",
        unreadable: "this line could not be read",
        erased: "this address was erased at the person's request",
        exists: "already in the list (mode: add new only)",
        missing: "not in the list (mode: update existing only)",
        changed: "changed by someone else while importing; import again to update",
    },
    problems: ProblemTexts {
        form_too_large: "the form is too large",
        form_unreadable: "the form could not be read",
        upload_unreadable: "the upload could not be read",
        upload_interrupted: "the upload was interrupted",
        upload_too_large: |mib| format!("the file is larger than {} MiB", group_digits(mib as i64)),
        file_empty: "the file is empty",
        choose_file: "choose a CSV file to upload",
        already_exists: "that already exists",
        still_referenced: "it refers to something that no longer exists, or is still in use",
        invalid_values: "some of the values are not valid",
        already_set_up: "Loopline is already set up; sign in instead",
        user_email_taken: "a user with that email address already exists",
        user_email_length: "that email address is too short or too long",
        wrong_current_password: "the current password is not correct",
        last_owner: "Loopline needs at least one owner; make someone else owner first",
        cannot_remove_self: "you cannot remove your own account; ask another owner",
        choose_role: "choose a role",
        choose_language: "choose a language from the list",
        sign_in_throttled: |m| {
            format!("too many failed sign-in attempts; wait {m} minutes and try again")
        },
        password_too_short: |n| format!("the password must be at least {n} characters long"),
        password_too_long: |n| format!("the password must be at most {n} characters long"),
        password_mismatch: "the two passwords do not match",
        job_not_failed: "that job is not in the failed state (it may have been retried already)",
        choose_action: "choose what to do",
        choose_segment: "choose a segment",
        bulk_needs_tag: "give the tag to add or remove",
        bulk_needs_selection: "select at least one subscriber",
        lifecycle_range: "each threshold is a whole number of days between 1 and 3650",
        lifecycle_at_least_one_day: "the thresholds must be at least one day",
        lifecycle_churn_after_active: "churned must be more days than active",
        field_key: "the key starts with a letter and uses a–z, 0–9 and _ (for example: city, first_order)",
        field_label: "give the field a label (up to 100 characters)",
        field_type: "choose a type",
        field_choices: "a choice field needs its choices, separated by commas",
        field_taken: "a field with that key already exists",
        form_name: "give the form a name (up to 100 characters)",
        form_slug: "the address part may use a–z, 0–9 and hyphens, and must start with a letter or digit",
        form_slug_taken: "another form already uses that address",
        segment_name: "give the segment a name (up to 100 characters)",
        segment_taken: "a segment with that name already exists",
        seg_too_many: |n| format!("a segment may have at most {n} conditions"),
        seg_too_deep: |n| format!("groups may be nested at most {n} deep"),
        seg_no_field: |k| format!("there is no field `{k}`"),
        seg_not_number: |v| format!("`{v}` is not a number"),
        seg_not_date: |v| format!("`{v}` is not a date (YYYY-MM-DD)"),
        seg_not_boolean: "a yes/no field is compared with true or false",
        seg_op_does_not_apply: |op, t| format!("“{op}” does not apply to a {t} field"),
        seg_days: "days must be between 1 and 3650",
        seg_mails: "the number of mails must be between 1 and 1000",
        seg_need_label: "give the link label to look for",
        seg_need_event: "give the event name to look for",
        seg_row: |row, what| format!("row {row}: {what}"),
        seg_row_status: "choose a status",
        seg_row_stage: "choose a stage",
        seg_row_tag: "choose a tag",
        seg_row_comparison: "choose a comparison",
        seg_row_days: "not a number of days",
        seg_row_mails: "give a number of mails",
        seg_row_unknown: "unknown condition",
        seg_json: |l, c| {
            format!(
                "the advanced definition is not valid JSON or not a definition (line {l}, column {c})"
            )
        },
        import_unknown_choice: |c| format!("column {c} has an unknown choice"),
        import_unknown_field: |c| format!("column {c} is set to a field that does not exist"),
        import_no_email: "map exactly one column to Email",
        import_email_twice: |a, b| {
            format!("columns {a} and {b} are both set to Email; choose only one of them")
        },
        import_target_twice: |t, a, b| {
            format!("columns {a} and {b} are both set to {t}; choose only one of them")
        },
        import_started: "this import was already started",
        import_finished: "this import has already finished",
        test_recipient: |e| format!("To: {e}"),
        test_subject: "Subject: write a subject",
    },
    failures: FailureTexts {
        tech_detail: "Technical detail",
        imp_empty: "The file is empty.",
        imp_spreadsheet: "This is an Excel workbook, not a CSV file. In Excel, use File > Save As > CSV (comma delimited) and upload that file.",
        imp_not_csv: "This doesn't look like a CSV file. Export your subscribers as CSV and upload that file.",
        imp_bad_header: |line| {
            format!("The header row (line {line}) could not be read; check its quotes.")
        },
        imp_unreadable: "The uploaded file could not be read. Upload it again.",
        imp_interrupted: "Reading the uploaded file broke off part-way on every attempt. Upload it again; rows already imported stay.",
        imp_database: "The database refused the import on every attempt. Rows already imported stay; try again later.",
        imp_stopped: "The import stopped after an internal error on every attempt. Rows already imported stay.",
        imp_cancelled: "The import was cancelled. Rows already imported stay.",
        kind_import: "import",
        kind_bulk: "bulk action",
        job_failed: |k| format!("The {k} job failed."),
        job_database: |k| format!("The {k} job hit a database error."),
        job_panicked: |k| format!("The {k} job crashed."),
        job_lease: |k| format!("The worker running the {k} job stopped responding."),
        job_unhandled: |k| format!("Waiting for a Loopline process that can run {k} jobs."),
        job_bad_payload: "The job's data could not be read.",
        job_import_gone: |id| format!("Import #{id} no longer exists."),
        job_import_stopped: |id| format!("Import #{id} stopped; its page says why."),
        job_segment_gone: |id| format!("Segment #{id} no longer exists."),
        job_segment_invalid: |id| {
            format!(
                "Segment #{id} no longer fits the custom fields; edit it and run the action again."
            )
        },
        job_bulk_invalid: "The bulk action is missing its tag or its selection.",
        job_will_retry: "It will be tried again.",
        job_gave_up: |n| {
            if n == 1 {
                "Stopped after 1 attempt.".to_string()
            } else {
                format!("Stopped after {n} attempts.")
            }
        },
        tpl_parts: ["Subject", "Preheader", "Body"],
        tpl_at: |part, line, what| match line {
            Some(l) => format!("{part}, line {l}: {what}"),
            None => format!("{part}: {what}"),
        },
        tpl_syntax: "the merge tags are not written correctly (check {{ }} and {% %})",
        tpl_unknown_filter: "a filter that does not exist",
        tpl_unknown_function: "a function that does not exist",
        tpl_unknown_test: "a test that does not exist",
        tpl_unknown_method: "a method that does not exist",
        tpl_undefined: "a value that is not there is used",
        tpl_invalid_operation: "an operation these values do not support",
        tpl_arguments: "a filter or function gets the wrong arguments",
        tpl_other: "the template could not be rendered",
        tpl_too_large: |part, kib| {
            format!(
                "{part}: longer than {} KiB after merging",
                group_digits(kib as i64)
            )
        },
        tpl_out_of_fuel: |part| {
            format!("{part}: needs too much work to render (a loop or repetition is too big)")
        },
        tpl_layout: "The email layout could not be built.",
    },
};

pub static KO: Strings = Strings {
    lang: Lang::Ko,
    app_name: "Loopline",
    tagline: "계획하고, 보내고, 배우고, 다시 — 하나의 루프.",
    nav_dashboard: "대시보드",
    nav_calendar: "캘린더",
    nav_audience: "구독자",
    nav_campaigns: "캠페인",
    nav_automations: "자동화",
    nav_insights: "인사이트",
    nav_settings: "설정",
    soon: "준비 중",
    sign_out: "로그아웃",
    signed_in_as: "로그인 계정",
    email: "이메일",
    password: "비밀번호",
    password_confirm: "비밀번호 확인",
    password_hint: "10자 이상으로 정해 주세요. 문장형 비밀번호가 기억하기 쉽습니다.",
    current_password: "현재 비밀번호",
    new_password: "새 비밀번호",
    role: "역할",
    setup_title: "Loopline 설정",
    setup_intro: "소유자 계정을 만드세요. 편집자와 열람자는 나중에 초대할 수 있습니다.",
    setup_submit: "소유자 계정 만들기",
    login_title: "로그인",
    login_submit: "로그인",
    login_failed: "이메일과 비밀번호가 일치하는 계정이 없습니다.",
    dashboard_title: "대시보드",
    dashboard_welcome: "다시 오신 것을 환영합니다",
    loop_title: "루프",
    loop_steps: [
        "캘린더에서 콘텐츠 계획하기",
        "시퀀스, 캠페인, RSS 뉴스레터 보내기",
        "열람, 클릭, 답장, 구매 반응 모으기",
        "행동에 태그를 달고 세그먼트 만들기",
        "다음 단계로 분기하기",
        "성과가 낮은 부분 고치기",
    ],
    getting_started: "시작하기",
    jobs_title: "백그라운드 작업",
    jobs_intro: "Loopline이 뒤에서 처리하는 작업입니다: 발송, 가져오기, 규칙. 실패한 작업은 간격을 늘려 가며 다시 시도하고, 계속 실패하는 작업은 확인하실 수 있도록 여기에 멈춰 둡니다.",
    jobs_queued: "대기 중",
    jobs_running: "실행 중",
    jobs_done: "완료",
    jobs_dead: "실패",
    jobs_none: "대기 중이거나 실행 중이거나 실패한 작업이 없습니다.",
    jobs_kind: "종류",
    jobs_status: "상태",
    jobs_attempts: "시도 횟수",
    jobs_run_at: "다음 실행",
    jobs_error: "마지막 오류",
    jobs_progress: "진행률",
    jobs_retry: "다시 시도",
    users_title: "사용자",
    users_intro: "소유자는 사용자와 설정을 관리하고, 편집자는 마케팅 작업을 바꾸고, 열람자는 읽기만 합니다.",
    users_add: "사용자 추가",
    users_add_submit: "사용자 추가",
    users_change_role: "역할 변경",
    users_delete: "삭제",
    users_you: "나",
    users_created: "추가한 날",
    account_title: "내 계정",
    account_change_password: "비밀번호 변경",
    account_change_password_hint: "비밀번호를 바꾸면 다른 기기의 로그인은 모두 해제됩니다.",
    account_submit: "비밀번호 변경",
    settings_title: "설정",
    settings_account_blurb: "비밀번호, 로그인 세션, 언어.",
    settings_users_blurb: "누가 로그인할 수 있고 무엇을 할 수 있는지.",
    settings_jobs_blurb: "백그라운드 작업: 대기 중, 실행 중, 실패한 작업.",
    role_owner: "소유자",
    role_editor: "편집자",
    role_viewer: "열람자",
    area_coming: "이 영역은 다음 릴리스에서 제공됩니다. 제공될 기능은 다음과 같습니다:",
    area_calendar: "콘텐츠 캘린더: 대상 세그먼트(신규, 활성, 이탈 위험)별로 블로그 글, 메일, SNS 게시물을 계획합니다. 항목을 발행하면 알맞은 사람에게 보내지고, RSS 피드의 새 글은 뉴스레터가 됩니다.",
    area_audience: "구독자, 수신 동의, 구독 신청 폼, 태그, 사용자 정의 필드, 세그먼트. MailerLite, Mailchimp, Kit, Brevo에서 가져오고 어떤 세그먼트든 내보낼 수 있습니다.",
    area_campaigns: "Markdown 또는 HTML로 쓰는 일회성 캠페인: 병합 필드, 데스크톱·모바일 미리보기, 테스트 발송, 제목 A/B 테스트.",
    area_automations: "환영 시퀀스와 행동 분기: 이틀 기다리고, 클릭을 확인하고, 태그를 달고, 분기합니다. 실제 구독자에게 닿기 전에 흐름 전체를 시험 실행할 수 있습니다.",
    area_insights: "스캐너가 아닌 사람의 열람과 클릭, 성과가 낮은 단계, 보내기 가장 좋은 시간, A/B 테스트 승자.",
    error_title: "문제가 생겼습니다",
    error_back: "대시보드로 돌아가기",
    notice_password_changed: "비밀번호를 바꿨습니다. 다른 세션은 로그아웃되었습니다.",
    notice_user_created: "사용자를 추가했습니다.",
    notice_role_changed: "역할을 바꿨습니다.",
    notice_user_deleted: "사용자를 삭제했습니다.",
    notice_job_retried: "작업을 다시 대기열에 넣었습니다.",
    notice_signed_out: "로그아웃되었습니다.",
    aud_title: "구독자",
    aud_search: "이메일 또는 이름 검색",
    aud_filter: "필터",
    aud_any_status: "모든 상태",
    aud_any_tag: "모든 태그",
    aud_any_stage: "모든 단계",
    aud_name: "이름",
    aud_status: "상태",
    aud_stage: "단계",
    aud_created: "구독일",
    aud_none: "조건에 맞는 구독자가 없습니다.",
    aud_next: "다음 페이지",
    aud_forms: "구독 신청 폼",
    aud_profile: "구독자",
    aud_fields: "필드",
    aud_tags: "태그",
    aud_consent: "수신 동의",
    aud_consent_method: "방법",
    aud_consent_when: "일시",
    aud_consent_form: "폼",
    aud_consent_ip: "접속 주소",
    aud_source: "유입 경로",
    aud_language: "언어",
    aud_timezone: "시간대",
    aud_timeline: "타임라인",
    aud_no_events: "아직 아무 일도 없었습니다.",
    aud_links: "이 구독자의 링크",
    aud_unsubscribe: "구독 취소",
    aud_export: "데이터 내보내기 (JSON)",
    aud_erase: "개인정보 삭제",
    aud_erase_hint: "주소, 이름, 필드를 영구히 삭제합니다. 익명 집계는 남습니다.",
    forms_intro: "폼마다 호스팅 페이지와 사이트에 붙여 넣을 HTML 코드가 있습니다. 이중 확인(더블 옵트인)은 끄지 않는 한 켜져 있습니다.",
    forms_none: "아직 폼이 없습니다.",
    forms_name: "폼 이름",
    forms_slug: "주소 (/f/ 뒤에 붙는 부분)",
    forms_single: "단일 확인 (확인 메일 없음)",
    forms_tags: "추가할 태그 (쉼표로 구분)",
    forms_create: "폼 만들기",
    forms_hosted: "호스팅 페이지",
    forms_snippet: "삽입용 코드",
    forms_doi: "이중 확인",
    forms_soi: "단일 확인",
    forms_language: "양식 언어",
    forms_language_auto: "방문자 브라우저 설정에 따름",
    forms_language_save: "언어 바꾸기",
    lc_title: "생애 주기 단계",
    lc_intro: "단계는 반응(사람의 열람과 클릭)으로 정해집니다. 신규: 최근에 구독했고 아직 반응이 없음. 활성: 최근에 반응함. 이탈 위험: 한동안 반응이 없음. 이탈: 오랫동안 반응이 없음.",
    lc_new_days: "신규로 보는 기간 (일)",
    lc_active_days: "활성으로 보는 마지막 반응 이후 기간 (일)",
    lc_churn_days: "이탈로 보는 무반응 기간 (일)",
    lc_save: "저장",
    settings_audience_blurb: "생애 주기 단계의 기준.",
    notice_unsubscribed: "구독을 취소했습니다.",
    notice_erased: "구독자의 개인정보를 삭제했습니다.",
    notice_settings_saved: "설정을 저장했습니다.",
    imp_title: "가져오기와 내보내기",
    imp_intro: "MailerLite, Mailchimp, Kit, Brevo 또는 스프레드시트에서 내보낸 CSV를 올리세요(UTF-8, UTF-16, EUC-KR/CP949). 가져오기 전에 열을 확인하실 수 있고, 가져오지 못한 행은 보고서로 정리됩니다.",
    imp_file: "파일",
    imp_upload: "올리고 미리 보기",
    imp_export_all: "전체를 CSV로 내보내기",
    imp_added: "추가",
    imp_updated: "갱신",
    imp_skipped: "건너뜀",
    imp_failed: "잘못됨",
    imp_not_imported: "가져오지 못함",
    imp_from: "내보낸 곳:",
    imp_column: "열",
    imp_import_as: "가져올 항목",
    imp_examples: "예시",
    imp_mode: "이미 있는 구독자",
    imp_tags: "이 파일의 모든 구독자에게 붙일 태그 (쉼표로 구분)",
    imp_start: "가져오기 시작",
    imp_report: "가져오지 못한 행 보고서 내려받기 (CSV)",
    imp_line: "줄",
    imp_value: "값",
    imp_reason: "이유",
    imp_cancel: "가져오기 취소",
    aud_imports: "가져오기 / 내보내기",
    fields_title: "필드와 태그",
    fields_custom: "사용자 정의 필드",
    fields_none: "아직 사용자 정의 필드가 없습니다.",
    fields_key: "키",
    fields_label: "표시 이름",
    fields_type: "형식",
    fields_choices: "선택지 (선택형 필드일 때, 쉼표로 구분)",
    fields_add: "필드 추가",
    tags_intro: "태그는 폼, 가져오기, 규칙이 그때그때 만듭니다. 주제는 구독자가 수신 설정 페이지에서 고를 수 있는 태그입니다.",
    tags_topic: "주제",
    tags_toggle: "전환",
    aud_fields_link: "필드와 태그",
    bulk_title: "선택한 구독자 또는 세그먼트 전체에 대해",
    bulk_selected: "선택한 구독자",
    bulk_segment: "세그먼트 전체",
    bulk_tag: "태그 추가",
    bulk_untag: "태그 제거",
    bulk_unsubscribe: "구독 취소",
    bulk_delete: "삭제",
    bulk_tag_name: "태그",
    bulk_run: "실행",
    notice_bulk_queued: "일괄 작업을 실행하고 있습니다. 진행 상황은 아래에 표시됩니다.",
    seg_title: "세그먼트",
    seg_name: "세그먼트 이름",
    seg_count: "구독자 수",
    seg_new: "새 세그먼트",
    seg_match: "조건",
    seg_all: "모든 조건을 만족",
    seg_any: "하나 이상의 조건을 만족",
    seg_advanced: "고급: JSON으로 정의하기 (중첩 그룹)",
    seg_preview: "세어 보기",
    seg_save: "세그먼트 저장",
    aud_segments: "세그먼트",
    aud_any_segment: "모든 세그먼트",
    nav_outbox: "보낸 편지함",
    out_title: "보낸 편지함",
    out_capture: "SMTP 서버가 설정되지 않아(SMTP_URL) 메일을 보내지 않고 여기에 보관합니다. 실제로 나갈 메일과 똑같습니다.",
    out_smtp: "설정된 SMTP 서버로 메일을 보냅니다. 모든 메일과 상태, 서버 응답이 여기에 표시됩니다.",
    out_empty: "아직 메일이 없습니다.",
    out_to: "받는 사람",
    out_subject: "제목",
    out_preheader: "프리헤더 (미리 보기 문구)",
    out_body: "본문",
    out_format: "형식",
    out_status: "상태",
    out_reply: "서버 응답",
    out_captured_reply: "여기에 보관됨: SMTP 서버가 설정되지 않아 실제로 보내지 않았습니다.",
    out_created: "대기열에 넣은 시각",
    out_sent: "보낸 시각",
    out_purpose: "종류",
    out_test_title: "메일 작성과 테스트",
    out_test_hint: "Markdown으로 쓰고, {{ subscriber.first_name or \"고객\" }} 같은 병합 필드를 쓸 수 있습니다. 세그먼트와 규칙에 쓸 링크에는 제목으로 라벨을 붙이세요: [구매](https://shop.example \"purchase\").",
    out_send_test: "테스트 발송",
    out_preview: "미리 보기",
    out_desktop: "데스크톱",
    out_mobile: "모바일",
    out_text_part: "텍스트 본문",
    out_raw: "원본 메일 내려받기 (.eml)",
    out_older: "이전",
    out_view: "보기",
    out_test_queued: "테스트 메일을 대기열에 넣었습니다. 발송되면 아래에 표시됩니다.",
    out_test_already_queued: "이미 보낸 양식입니다. 테스트 메일은 한 번만 대기열에 들어갑니다. 다시 보내려면 페이지를 새로 고치세요.",
    account_language: "언어",
    account_language_hint: "대시보드에 표시할 언어입니다. 따로 고르기 전에는 브라우저 설정을 따릅니다.",
    account_language_save: "언어 저장",
    notice_language_saved: "언어를 저장했습니다.",
    states: StateLabels {
        unconfirmed: "미확인",
        active: "활성",
        unsubscribed: "구독 취소",
        bounced: "반송",
        complained: "스팸 신고",
        new: "신규",
        at_risk: "이탈 위험",
        churned: "이탈",
        queued: "대기 중",
        running: "실행 중",
        done: "완료",
        dead: "실패",
        uploaded: "업로드됨",
        failed: "실패",
        cancelled: "취소됨",
        sending: "보내는 중",
        sent: "보냄",
        suppressed: "발송 제외",
    },
    nav_label: "주 메뉴",
    bulk_scope_label: "대상 구독자",
    bulk_action_label: "작업",
    seg_condition_label: "조건",
    seg_what_label: "대상",
    seg_comparison_label: "비교 방법",
    seg_value_label: "값",
    seg_arg_hint: "상태 / 단계 / 태그 ID / 필드 / 일수 / 라벨",
    seg_kinds: [
        "상태가 다음과 같음",
        "생애 주기 단계가 다음과 같음",
        "태그가 있음",
        "태그가 없음",
        "필드",
        "며칠 안에 열어 봄",
        "며칠 동안 열어 보지 않음",
        "며칠 안에 클릭함",
        "연속으로 열지 않은 메일 수(이상)",
        "다음 라벨의 링크를 클릭함",
        "이벤트가 있었음",
    ],
    seg_ops: [
        "같음",
        "같지 않음",
        "포함함",
        "보다 큼",
        "보다 작음",
        "값이 있음",
        "값이 없음",
    ],
    field_types: ["텍스트", "숫자", "날짜", "예/아니요", "선택형"],
    imp_modes: [
        "새 구독자는 추가하고 기존 구독자는 갱신",
        "새 구독자만 추가 (기존 구독자는 건너뜀)",
        "기존 구독자만 갱신",
    ],
    imp_targets: [
        "— 건너뛰기 —",
        "이메일",
        "이름 (전체)",
        "이름",
        "성",
        "상태",
        "구독일",
        "태그",
    ],
    imp_field_target: |label| format!("필드: {label}"),
    imp_size: |n| format!("{}바이트", group_digits(n)),
    aud_total_around: ["전체 구독자 ", "명"],
    seg_matching_around: ["조건에 맞는 구독자 ", "명"],
    out_sample_subject: "{{ subscriber.first_name or \"고객\" }}님, 이번 주 소식입니다",
    out_sample_body: "안녕하세요, {{ subscriber.first_name or \"고객\" }}님.\n\n[글 읽기](https://example.com/blog \"topic:marketing\")\n",
    out_purposes: PurposeLabels {
        test: "테스트",
        confirmation: "구독 확인",
        data_request: "정보 요청",
    },
    events: EventLabels {
        subscribed: "구독 신청",
        confirmed: "구독 확인",
        signup_again: "다시 구독 신청",
        unsubscribed: "구독 취소",
        bounced: "반송",
        complained: "스팸 신고",
        sent: "발송",
        deferred: "발송 지연",
        failed: "발송 실패",
        delivered: "전달됨",
        opened: "열람",
        clicked: "클릭",
        converted: "전환",
        imported: "가져옴",
        import_updated: "가져오기로 갱신됨",
        tagged: "태그 추가",
        untagged: "태그 제거",
        preferences_changed: "수신 설정 변경",
    },
    consent_double: "이중 확인",
    consent_single: "단일 확인",
    consent_import: "가져오기",
    status_name: |code| match code {
        400 => "잘못된 요청",
        401 => "인증 필요",
        403 => "권한 없음",
        404 => "찾을 수 없음",
        405 => "허용되지 않는 요청 방식",
        409 => "충돌",
        413 => "요청이 너무 큼",
        415 => "지원하지 않는 형식",
        422 => "처리할 수 없는 입력",
        429 => "요청이 너무 많음",
        500 => "서버 오류",
        503 => "서비스 준비 중",
        _ => "오류",
    },
    err_not_found: "찾으시는 페이지나 항목이 없습니다.",
    err_forbidden: "이 작업을 할 권한이 없습니다.",
    err_csrf: "양식의 유효 시간이 지났거나 다른 사이트에서 보낸 양식입니다. 페이지를 새로 고친 뒤 다시 시도해 주세요.",
    err_internal: "서버에 문제가 생겼습니다. 기록해 두었으니 잠시 후 다시 시도해 주세요.",
    err_unavailable: "서비스가 아직 준비되지 않았습니다.",
    err_rejected: |code, _| {
        match code {
            404 => "찾으시는 페이지나 항목이 없습니다.",
            405 => "이 주소에서는 그 요청 방식을 쓸 수 없습니다.",
            413 => "보내신 내용이 너무 큽니다.",
            415 => "보내신 양식의 형식을 읽을 수 없습니다.",
            _ => "요청을 처리할 수 없습니다. 입력한 내용을 확인해 주세요.",
        }
        .to_string()
    },
    imp_reason_text: |code, _| {
        let r = &KO.imp_reasons;
        match code {
            ReportCode::Email => r.email,
            ReportCode::Duplicate => r.duplicate,
            ReportCode::Value => r.value,
            ReportCode::Name => r.name,
            ReportCode::Unreadable => r.unreadable,
            ReportCode::Erased => r.erased,
            ReportCode::Exists => r.exists,
            ReportCode::Missing => r.missing,
            ReportCode::Changed => r.changed,
        }
        .to_string()
    },
    imp_reasons: ReportReasons {
        email: "올바른 이메일 주소가 아닙니다.",
        duplicate: "같은 주소가 파일의 앞부분에 이미 있습니다.",
        value: "읽을 수 없는 값이 있습니다.",
        name: "이름이 너무 길거나 NUL 문자가 들어 있습니다.",
        unreadable: "이 줄을 읽을 수 없습니다.",
        erased: "본인의 요청으로 삭제된 주소입니다.",
        exists: "이미 목록에 있습니다 (새 구독자만 추가).",
        missing: "목록에 없습니다 (기존 구독자만 갱신).",
        changed: "가져오는 동안 다른 사람이 바꾸었습니다. 갱신하려면 다시 가져와 주세요.",
    },
    problems: ProblemTexts {
        form_too_large: "양식의 내용이 너무 큽니다.",
        form_unreadable: "양식을 읽을 수 없습니다.",
        upload_unreadable: "올린 파일을 읽을 수 없습니다.",
        upload_interrupted: "파일을 올리는 도중에 끊겼습니다.",
        upload_too_large: |mib| format!("파일이 {}MiB보다 큽니다.", group_digits(mib as i64)),
        file_empty: "빈 파일입니다.",
        choose_file: "올릴 CSV 파일을 골라 주세요.",
        already_exists: "이미 있는 항목입니다.",
        still_referenced: "더 이상 없는 항목을 가리키거나, 아직 사용 중인 항목입니다.",
        invalid_values: "올바르지 않은 값이 있습니다.",
        already_set_up: "Loopline은 이미 설정되어 있습니다. 로그인해 주세요.",
        user_email_taken: "같은 이메일 주소를 쓰는 사용자가 이미 있습니다.",
        user_email_length: "이메일 주소가 너무 짧거나 깁니다.",
        wrong_current_password: "현재 비밀번호가 올바르지 않습니다.",
        last_owner: "Loopline에는 소유자가 한 명 이상 있어야 합니다. 먼저 다른 사용자를 소유자로 지정해 주세요.",
        cannot_remove_self: "자신의 계정은 삭제할 수 없습니다. 다른 소유자에게 요청해 주세요.",
        choose_role: "역할을 골라 주세요.",
        choose_language: "목록에서 언어를 골라 주세요.",
        sign_in_throttled: |m| {
            format!("로그인에 실패한 횟수가 너무 많습니다. {m}분 뒤에 다시 시도해 주세요.")
        },
        password_too_short: |n| format!("비밀번호는 {n}자 이상이어야 합니다."),
        password_too_long: |n| format!("비밀번호는 {n}자 이하여야 합니다."),
        password_mismatch: "두 비밀번호가 일치하지 않습니다.",
        job_not_failed: "실패 상태인 작업이 아닙니다. 이미 다시 시도했을 수 있습니다.",
        choose_action: "할 작업을 골라 주세요.",
        choose_segment: "세그먼트를 골라 주세요.",
        bulk_needs_tag: "추가하거나 제거할 태그를 입력해 주세요.",
        bulk_needs_selection: "구독자를 한 명 이상 선택해 주세요.",
        lifecycle_range: "각 기준은 1부터 3650 사이의 정수(일)여야 합니다.",
        lifecycle_at_least_one_day: "기준은 하루 이상이어야 합니다.",
        lifecycle_churn_after_active: "이탈 기준 일수는 활성 기준 일수보다 커야 합니다.",
        field_key: "키는 영문 소문자로 시작하고 a–z, 0–9, _만 쓸 수 있습니다(예: city, first_order).",
        field_label: "필드의 표시 이름을 입력해 주세요(100자 이내).",
        field_type: "형식을 골라 주세요.",
        field_choices: "선택형 필드에는 쉼표로 구분한 선택지가 필요합니다.",
        field_taken: "같은 키를 쓰는 필드가 이미 있습니다.",
        form_name: "폼 이름을 입력해 주세요(100자 이내).",
        form_slug: "주소에는 a–z, 0–9, 하이픈만 쓸 수 있고, 영문자나 숫자로 시작해야 합니다.",
        form_slug_taken: "다른 폼이 이미 그 주소를 쓰고 있습니다.",
        segment_name: "세그먼트 이름을 입력해 주세요(100자 이내).",
        segment_taken: "같은 이름의 세그먼트가 이미 있습니다.",
        seg_too_many: |n| format!("세그먼트의 조건은 {n}개까지 둘 수 있습니다."),
        seg_too_deep: |n| format!("그룹은 {n}단계까지만 중첩할 수 있습니다."),
        seg_no_field: |k| format!("`{k}` 필드가 없습니다."),
        seg_not_number: |v| format!("`{v}`은(는) 숫자가 아닙니다."),
        seg_not_date: |v| format!("`{v}`은(는) 날짜(YYYY-MM-DD)가 아닙니다."),
        seg_not_boolean: "예/아니요 필드는 true 또는 false와 비교합니다.",
        seg_op_does_not_apply: |op, t| format!("{t} 필드에는 “{op}” 비교를 쓸 수 없습니다."),
        seg_days: "일수는 1부터 3650 사이여야 합니다.",
        seg_mails: "메일 수는 1부터 1000 사이여야 합니다.",
        seg_need_label: "찾을 링크 라벨을 입력해 주세요.",
        seg_need_event: "찾을 이벤트 이름을 입력해 주세요.",
        seg_row: |row, what| format!("{row}번째 줄: {what}"),
        seg_row_status: "상태를 골라 주세요.",
        seg_row_stage: "단계를 골라 주세요.",
        seg_row_tag: "태그를 골라 주세요.",
        seg_row_comparison: "비교 방법을 골라 주세요.",
        seg_row_days: "일수를 숫자로 입력해 주세요.",
        seg_row_mails: "메일 수를 숫자로 입력해 주세요.",
        seg_row_unknown: "알 수 없는 조건입니다.",
        seg_json: |l, c| {
            format!(
                "고급 정의(JSON)가 올바르지 않거나 정의의 형식이 아닙니다({l}번째 줄, {c}번째 글자)."
            )
        },
        import_unknown_choice: |c| format!("{c}번 열에 알 수 없는 항목이 선택되어 있습니다."),
        import_unknown_field: |c| format!("{c}번 열에 없는 필드가 선택되어 있습니다."),
        import_no_email: "이메일로 가져올 열을 정확히 하나 골라 주세요.",
        import_email_twice: |a, b| {
            format!("{a}번 열과 {b}번 열이 모두 이메일로 지정되어 있습니다. 하나만 골라 주세요.")
        },
        import_target_twice: |t, a, b| {
            format!("{a}번 열과 {b}번 열이 모두 ‘{t}’(으)로 지정되어 있습니다. 하나만 골라 주세요.")
        },
        import_started: "이미 시작한 가져오기입니다.",
        import_finished: "이미 끝난 가져오기입니다.",
        test_recipient: |e| format!("받는 사람: {e}"),
        test_subject: "제목: 제목을 입력해 주세요.",
    },
    failures: FailureTexts {
        tech_detail: "기술 정보",
        imp_empty: "빈 파일입니다.",
        imp_spreadsheet: "CSV 파일이 아니라 엑셀 통합 문서입니다. 엑셀에서 파일 > 다른 이름으로 저장 > CSV(쉼표로 분리)로 저장한 뒤 그 파일을 올려 주세요.",
        imp_not_csv: "CSV 파일이 아닌 것 같습니다. 구독자 목록을 CSV로 내보낸 뒤 그 파일을 올려 주세요.",
        imp_bad_header: |line| {
            format!(
                "{line}번째 줄의 머리글 행을 읽을 수 없습니다. 따옴표가 제대로 닫혔는지 확인해 주세요."
            )
        },
        imp_unreadable: "올린 파일을 읽을 수 없습니다. 파일을 다시 올려 주세요.",
        imp_interrupted: "올린 파일을 읽다가 매번 중간에 끊겼습니다. 파일을 다시 올려 주세요. 이미 가져온 행은 그대로 남습니다.",
        imp_database: "데이터베이스 오류로 가져오기가 거듭 실패했습니다. 이미 가져온 행은 그대로 남습니다. 잠시 후 다시 시도해 주세요.",
        imp_stopped: "내부 오류가 거듭되어 가져오기를 멈췄습니다. 이미 가져온 행은 그대로 남습니다.",
        imp_cancelled: "가져오기를 취소했습니다. 이미 가져온 행은 그대로 남습니다.",
        kind_import: "가져오기",
        kind_bulk: "일괄 처리",
        job_failed: |k| format!("{k} 작업이 실패했습니다."),
        job_database: |k| format!("{k} 작업 중에 데이터베이스 오류가 났습니다."),
        job_panicked: |k| format!("{k} 작업이 비정상적으로 끝났습니다."),
        job_lease: |k| format!("{k} 작업을 실행하던 작업자가 응답하지 않았습니다."),
        job_unhandled: |k| {
            format!("{k} 작업을 실행할 수 있는 Loopline 프로세스를 기다리고 있습니다.")
        },
        job_bad_payload: "작업 데이터를 읽을 수 없습니다.",
        job_import_gone: |id| format!("가져오기 #{id}: 삭제되어 찾을 수 없습니다."),
        job_import_stopped: |id| {
            format!("가져오기 #{id}: 중단되었습니다. 이유는 가져오기 화면에서 확인하세요.")
        },
        job_segment_gone: |id| format!("세그먼트 #{id}: 삭제되어 찾을 수 없습니다."),
        job_segment_invalid: |id| {
            format!(
                "세그먼트 #{id}: 조건이 지금의 사용자 정의 필드와 맞지 않습니다. 세그먼트를 고친 뒤 다시 실행해 주세요."
            )
        },
        job_bulk_invalid: "일괄 처리에 태그나 선택한 구독자가 빠져 있습니다.",
        job_will_retry: "잠시 후 다시 시도합니다.",
        job_gave_up: |n| format!("{n}번 시도한 뒤 멈췄습니다."),
        tpl_parts: ["제목", "미리보기 문구", "본문"],
        tpl_at: |part, line, what| match line {
            Some(l) => format!("{part} {l}번째 줄: {what}"),
            None => format!("{part}: {what}"),
        },
        tpl_syntax: "치환 태그를 잘못 썼습니다({{ }}와 {% %}를 확인해 주세요).",
        tpl_unknown_filter: "없는 필터를 썼습니다.",
        tpl_unknown_function: "없는 함수를 썼습니다.",
        tpl_unknown_test: "없는 검사(is …)를 썼습니다.",
        tpl_unknown_method: "없는 메서드를 썼습니다.",
        tpl_undefined: "없는 값을 사용했습니다.",
        tpl_invalid_operation: "이 값들로는 할 수 없는 연산입니다.",
        tpl_arguments: "필터나 함수에 넘긴 인자가 맞지 않습니다.",
        tpl_other: "템플릿을 렌더링할 수 없습니다.",
        tpl_too_large: |part, kib| {
            format!(
                "{part}: 치환한 뒤의 길이가 {}KiB를 넘습니다.",
                group_digits(kib as i64)
            )
        },
        tpl_out_of_fuel: |part| {
            format!(
                "{part}: 렌더링에 드는 작업이 너무 많습니다(반복문이나 반복 횟수가 너무 큽니다)."
            )
        },
        tpl_layout: "메일 레이아웃을 만들 수 없습니다.",
    },
};

/// Values of the segment builder's condition kinds (labels: `Strings::seg_kinds`).
pub const SEG_KIND_KEYS: [&str; 11] = [
    "status",
    "stage",
    "tag",
    "no_tag",
    "field",
    "opened",
    "not_opened",
    "clicked",
    "unopened",
    "clicked_label",
    "event",
];
/// `FieldOp` JSON names (labels: `Strings::seg_ops`).
pub const SEG_OP_KEYS: [&str; 7] = [
    "is",
    "is_not",
    "contains",
    "greater_than",
    "less_than",
    "is_set",
    "is_not_set",
];
/// `FieldType` JSON names (labels: `Strings::field_types`).
pub const FIELD_TYPE_KEYS: [&str; 5] = ["text", "number", "date", "boolean", "choice"];
/// Import targets with a fixed name (labels: `Strings::imp_targets`).
const IMPORT_TARGET_KEYS: [&str; 8] = [
    "ignore",
    "email",
    "name",
    "first_name",
    "last_name",
    "status",
    "subscribed_at",
    "tags",
];

/// A count with thousands separators (`12,345`), as English and Korean both write it.
pub fn group_digits(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The dashboard strings in a language.
pub fn strings_for(lang: Lang) -> &'static Strings {
    match lang {
        Lang::En => &EN,
        Lang::Ko => &KO,
    }
}

impl Strings {
    pub fn role_label(&self, role: crate::accounts::Role) -> &'static str {
        match role {
            crate::accounts::Role::Owner => self.role_owner,
            crate::accounts::Role::Editor => self.role_editor,
            crate::accounts::Role::Viewer => self.role_viewer,
        }
    }

    /// Flash notices travel as short codes in the redirect URL, never as text, so a link
    /// cannot make the dashboard display words of an attacker's choosing.
    pub fn notice(&self, code: &str) -> Option<&'static str> {
        Some(match code {
            "password-changed" => self.notice_password_changed,
            "user-created" => self.notice_user_created,
            "role-changed" => self.notice_role_changed,
            "user-deleted" => self.notice_user_deleted,
            "job-retried" => self.notice_job_retried,
            "signed-out" => self.notice_signed_out,
            "test-queued" => self.out_test_queued,
            "test-already-queued" => self.out_test_already_queued,
            "unsubscribed" => self.notice_unsubscribed,
            "erased" => self.notice_erased,
            "settings-saved" => self.notice_settings_saved,
            "bulk-queued" => self.notice_bulk_queued,
            "language-saved" => self.notice_language_saved,
            _ => return None,
        })
    }

    /// The words for a problem, in this language.
    pub fn problem(&self, p: &crate::Problem) -> String {
        use crate::{Problem as P, error::SegmentRowProblem as R};
        let t = &self.problems;
        let s = |v: &'static str| v.to_string();
        match p {
            P::FormTooLarge => s(t.form_too_large),
            P::FormUnreadable => s(t.form_unreadable),
            P::UploadUnreadable => s(t.upload_unreadable),
            P::UploadInterrupted => s(t.upload_interrupted),
            P::UploadTooLarge { max_mib } => (t.upload_too_large)(*max_mib),
            P::FileEmpty => s(t.file_empty),
            P::ChooseFile => s(t.choose_file),
            P::AlreadyExists => s(t.already_exists),
            P::StillReferenced => s(t.still_referenced),
            P::InvalidValues => s(t.invalid_values),
            P::AlreadySetUp => s(t.already_set_up),
            P::UserEmailTaken => s(t.user_email_taken),
            P::UserEmailLength => s(t.user_email_length),
            P::WrongCurrentPassword => s(t.wrong_current_password),
            P::LastOwner => s(t.last_owner),
            P::CannotRemoveSelf => s(t.cannot_remove_self),
            P::ChooseRole => s(t.choose_role),
            P::ChooseLanguage => s(t.choose_language),
            P::SignInThrottled { minutes } => (t.sign_in_throttled)(*minutes),
            P::Password(e) => self.password_error(e),
            P::Address(e) => s(public_strings_for(self.lang).address_error(e)),
            P::JobNotFailed => s(t.job_not_failed),
            P::ChooseAction => s(t.choose_action),
            P::ChooseSegment => s(t.choose_segment),
            P::BulkNeedsTag => s(t.bulk_needs_tag),
            P::BulkNeedsSelection => s(t.bulk_needs_selection),
            P::LifecycleRange => s(t.lifecycle_range),
            P::LifecycleAtLeastOneDay => s(t.lifecycle_at_least_one_day),
            P::LifecycleChurnAfterActive => s(t.lifecycle_churn_after_active),
            P::FieldKey => s(t.field_key),
            P::FieldLabel => s(t.field_label),
            P::FieldType => s(t.field_type),
            P::FieldChoices => s(t.field_choices),
            P::FieldTaken => s(t.field_taken),
            P::FormName => s(t.form_name),
            P::FormSlug => s(t.form_slug),
            P::FormSlugTaken => s(t.form_slug_taken),
            P::SegmentName => s(t.segment_name),
            P::SegmentTaken => s(t.segment_taken),
            P::Segment(e) => self.segment_error(e),
            P::SegmentRow { row, problem } => {
                let what = match problem {
                    R::ChooseStatus => t.seg_row_status,
                    R::ChooseStage => t.seg_row_stage,
                    R::ChooseTag => t.seg_row_tag,
                    R::ChooseComparison => t.seg_row_comparison,
                    R::Days => t.seg_row_days,
                    R::Mails => t.seg_row_mails,
                    R::UnknownCondition => t.seg_row_unknown,
                };
                (t.seg_row)(*row, what)
            }
            P::SegmentJson { line, column } => (t.seg_json)(*line, *column),
            P::ImportUnknownChoice { column } => (t.import_unknown_choice)(*column),
            P::ImportUnknownField { column } => (t.import_unknown_field)(*column),
            P::ImportNoEmail => s(t.import_no_email),
            P::ImportEmailTwice { first, second } => (t.import_email_twice)(*first, *second),
            P::ImportTargetTwice {
                target,
                first,
                second,
            } => (t.import_target_twice)(&self.import_target(target), *first, *second),
            P::ImportStarted => s(t.import_started),
            P::ImportFinished => s(t.import_finished),
            P::TestRecipient(e) => {
                (t.test_recipient)(public_strings_for(self.lang).address_error(e))
            }
            P::TestSubject => s(t.test_subject),
            P::Template(e) => self.template_error(e),
            P::Said(text) => text.clone(),
        }
    }

    fn password_error(&self, e: &crate::accounts::PasswordError) -> String {
        use crate::accounts::PasswordError as E;
        let t = &self.problems;
        match e {
            E::TooShort => (t.password_too_short)(crate::accounts::PASSWORD_MIN_LEN),
            E::TooLong => (t.password_too_long)(crate::accounts::PASSWORD_MAX_LEN),
            E::Mismatch => t.password_mismatch.to_string(),
        }
    }

    fn segment_error(&self, e: &crate::audience::segments::SegmentError) -> String {
        use crate::audience::segments::SegmentError as E;
        let t = &self.problems;
        match e {
            E::TooManyConditions { max } => (t.seg_too_many)(*max),
            E::TooDeep { max } => (t.seg_too_deep)(*max),
            E::NoField { key } => (t.seg_no_field)(key),
            E::NotNumber { value } => (t.seg_not_number)(value),
            E::NotDate { value } => (t.seg_not_date)(value),
            E::NotBoolean => t.seg_not_boolean.to_string(),
            E::OpDoesNotApply { op, field_type } => {
                let op = SEG_OP_KEYS
                    .iter()
                    .position(|k| k == op)
                    .map_or(op.as_str(), |i| self.seg_ops[i]);
                let ty = FIELD_TYPE_KEYS
                    .iter()
                    .position(|k| k == field_type)
                    .map_or(field_type.as_str(), |i| self.field_types[i]);
                (t.seg_op_does_not_apply)(op, ty)
            }
            E::Days => t.seg_days.to_string(),
            E::Mails => t.seg_mails.to_string(),
            E::NeedLabel => t.seg_need_label.to_string(),
            E::NeedEvent => t.seg_need_event.to_string(),
        }
    }

    /// Why an import failed, in this language.
    pub fn import_failure(&self, f: &ImportFailure) -> String {
        use ImportFailure as F;
        let (t, p) = (&self.failures, &self.problems);
        match f {
            F::Empty => t.imp_empty.to_string(),
            F::Spreadsheet => t.imp_spreadsheet.to_string(),
            F::NotCsv => t.imp_not_csv.to_string(),
            F::BadHeader { line } => (t.imp_bad_header)(*line),
            F::NoEmailColumn => p.import_no_email.to_string(),
            F::EmailColumnTwice { first, second } => (p.import_email_twice)(*first, *second),
            F::ColumnTwice {
                target,
                first,
                second,
            } => (p.import_target_twice)(&self.import_target(target), *first, *second),
            F::UnknownField { column } => (p.import_unknown_field)(*column),
            F::Unreadable => t.imp_unreadable.to_string(),
            F::Interrupted => t.imp_interrupted.to_string(),
            F::Database => t.imp_database.to_string(),
            F::Stopped => t.imp_stopped.to_string(),
            F::Cancelled => t.imp_cancelled.to_string(),
        }
    }

    /// What the import page says about how an import ended badly: its code worded,
    /// else (rows from before codes) its stored text as it is.
    pub fn import_error(&self, i: &crate::audience::imports::Import) -> Option<String> {
        match i.failure() {
            Some(f) => Some(self.import_failure(&f)),
            None => i.error.clone(),
        }
    }

    /// The name of a kind of job; an unknown kind shows as its code.
    pub fn job_kind<'a>(&self, kind: &'a str) -> &'a str {
        match kind {
            crate::audience::imports::IMPORT_JOB => self.failures.kind_import,
            crate::audience::bulk::BULK_JOB => self.failures.kind_bulk,
            other => other,
        }
    }

    /// What went wrong with a job, in this language.
    pub fn job_failure(&self, f: &crate::jobs::JobFailure, kind: &str) -> String {
        use crate::jobs::JobFailure as F;
        let t = &self.failures;
        let k = self.job_kind(kind);
        match f {
            F::Failed => (t.job_failed)(k),
            F::Database => (t.job_database)(k),
            F::Panicked => (t.job_panicked)(k),
            F::LeaseExpired => (t.job_lease)(k),
            F::Unhandled => (t.job_unhandled)(k),
            F::BadPayload => t.job_bad_payload.to_string(),
            F::ImportGone { import } => (t.job_import_gone)(*import),
            F::ImportStopped { import } => (t.job_import_stopped)(*import),
            F::SegmentGone { segment } => (t.job_segment_gone)(*segment),
            F::SegmentInvalid { segment } => (t.job_segment_invalid)(*segment),
            F::BulkInvalid => t.job_bulk_invalid.to_string(),
        }
    }

    /// The jobs page's words for a job's last failure and what happens next; `None`
    /// when it has not failed. Rows from before codes read as a plain failure.
    pub fn job_error(&self, j: &crate::jobs::JobRow) -> Option<String> {
        use crate::jobs::JobFailure as F;
        if j.error_code.is_none() && j.last_error.is_none() {
            return None;
        }
        let f = j.failure().unwrap_or(F::Failed);
        let what = self.job_failure(&f, &j.kind);
        let t = &self.failures;
        Some(match j.status.as_str() {
            "dead" => format!("{what} {}", (t.job_gave_up)(j.attempts)),
            "queued" | "running" if f != F::Unhandled => format!("{what} {}", t.job_will_retry),
            _ => what,
        })
    }

    /// Why a mail template does not compile or render, in this language, with the
    /// part and line where the engine says.
    pub fn template_error(&self, e: &crate::delivery::render::RenderError) -> String {
        use crate::delivery::render::{Part, RenderError as E, TemplateIssue as I};
        let t = &self.failures;
        let part = |p: &Part| match p {
            Part::Subject => t.tpl_parts[0],
            Part::Preheader => t.tpl_parts[1],
            Part::Body => t.tpl_parts[2],
        };
        match e {
            E::Syntax { part: p, line, .. } => (t.tpl_at)(part(p), Some(*line), t.tpl_syntax),
            E::Runtime {
                part: p,
                line,
                issue,
                ..
            } => {
                let what = match issue {
                    I::UnknownFilter => t.tpl_unknown_filter,
                    I::UnknownFunction => t.tpl_unknown_function,
                    I::UnknownTest => t.tpl_unknown_test,
                    I::UnknownMethod => t.tpl_unknown_method,
                    I::Undefined => t.tpl_undefined,
                    I::InvalidOperation => t.tpl_invalid_operation,
                    I::Arguments => t.tpl_arguments,
                    I::Other => t.tpl_other,
                };
                (t.tpl_at)(part(p), *line, what)
            }
            E::TooLarge { part: p, limit } => (t.tpl_too_large)(part(p), limit / 1024),
            E::OutOfFuel { part: p } => (t.tpl_out_of_fuel)(part(p)),
            E::Layout(_) => t.tpl_layout.to_string(),
        }
    }

    /// The name of an import column target (`Target::key`: `email`, `field:city`).
    pub fn import_target(&self, key: &str) -> String {
        if let Some(field) = key.strip_prefix("field:") {
            return (self.imp_field_target)(field);
        }
        IMPORT_TARGET_KEYS
            .iter()
            .position(|k| *k == key)
            .map_or_else(|| key.to_string(), |i| self.imp_targets[i].to_string())
    }

    /// The name of a custom field type.
    pub fn field_type(&self, t: crate::audience::fields::FieldType) -> &'static str {
        use crate::audience::fields::FieldType as T;
        self.field_types[match t {
            T::Text => 0,
            T::Number => 1,
            T::Date => 2,
            T::Boolean => 3,
            T::Choice => 4,
        }]
    }

    /// A timeline event's name; an unknown kind shows as its code.
    pub fn event<'a>(&self, kind: &'a str) -> &'a str {
        let e = &self.events;
        match kind {
            "subscribed" => e.subscribed,
            "confirmed" => e.confirmed,
            "signup_again" => e.signup_again,
            "unsubscribed" => e.unsubscribed,
            "bounced" => e.bounced,
            "complained" => e.complained,
            "sent" => e.sent,
            "deferred" => e.deferred,
            "failed" => e.failed,
            "delivered" => e.delivered,
            "opened" => e.opened,
            "clicked" => e.clicked,
            "converted" => e.converted,
            "imported" => e.imported,
            "import_updated" => e.import_updated,
            "tagged" => e.tagged,
            "untagged" => e.untagged,
            "preferences_changed" => e.preferences_changed,
            other => other,
        }
    }

    /// The kind of a message in the outbox; an unknown kind shows as its code.
    pub fn purpose<'a>(&self, code: &'a str) -> &'a str {
        match code {
            "test" => self.out_purposes.test,
            "confirmation" => self.out_purposes.confirmation,
            "data-request" => self.out_purposes.data_request,
            other => other,
        }
    }

    /// How consent was given (`double_opt_in`…); an unknown code shows as itself.
    pub fn consent<'a>(&self, code: &'a str) -> &'a str {
        match code {
            "double_opt_in" => self.consent_double,
            "single_opt_in" => self.consent_single,
            "import" => self.consent_import,
            other => other,
        }
    }

    /// Why an import row was not imported, as the page shows it.
    pub fn report_reason(&self, code: &str, text: &str) -> String {
        match ReportCode::parse(code) {
            Some(c) => (self.imp_reason_text)(c, text),
            None => text.to_string(),
        }
    }

    /// Builder rows: (value, label) for each condition kind, `""` first.
    pub fn seg_kind_options(&self) -> Vec<(&'static str, &'static str)> {
        std::iter::once(("", "—"))
            .chain(SEG_KIND_KEYS.into_iter().zip(self.seg_kinds))
            .collect()
    }

    /// Builder rows: (value, label) for each field comparison.
    pub fn seg_op_options(&self) -> Vec<(&'static str, &'static str)> {
        SEG_OP_KEYS.into_iter().zip(self.seg_ops).collect()
    }

    /// Field types for the new-field form: (value, label).
    pub fn field_type_options(&self) -> Vec<(&'static str, &'static str)> {
        FIELD_TYPE_KEYS.into_iter().zip(self.field_types).collect()
    }

    /// Import modes: (value, label).
    pub fn import_mode_options(&self) -> [(&'static str, &'static str); 3] {
        let m = self.imp_modes;
        [
            ("add_update", m[0]),
            ("add_only", m[1]),
            ("update_only", m[2]),
        ]
    }

    /// The label of a stored status or stage code; an unknown code shows as itself.
    pub fn state<'a>(&self, code: &'a str) -> &'a str {
        let s = &self.states;
        match code {
            "unconfirmed" => s.unconfirmed,
            "active" => s.active,
            "unsubscribed" => s.unsubscribed,
            "bounced" => s.bounced,
            "complained" => s.complained,
            "new" => s.new,
            "at-risk" => s.at_risk,
            "churned" => s.churned,
            "queued" => s.queued,
            "running" => s.running,
            "done" => s.done,
            "dead" => s.dead,
            "uploaded" => s.uploaded,
            "failed" => s.failed,
            "cancelled" => s.cancelled,
            "sending" => s.sending,
            "sent" => s.sent,
            "suppressed" => s.suppressed,
            other => other,
        }
    }
}

/// Strings of the pages subscribers see (signup, confirm, unsubscribe, preferences).
pub struct PublicStrings {
    pub lang: Lang,
    pub email: &'static str,
    pub name: &'static str,
    pub name_optional: &'static str,
    pub signup_submit: &'static str,
    pub signup_thanks: &'static str,
    pub signup_check_inbox: &'static str,
    pub signup_rate_limited: &'static str,
    pub confirm_title: &'static str,
    pub confirm_intro: &'static str,
    pub confirm_button: &'static str,
    pub confirm_done: &'static str,
    pub confirm_expired: &'static str,
    pub link_invalid: &'static str,
    pub unsub_title: &'static str,
    /// Text before and after the address: "Stop sending mail to" … "?".
    pub unsub_question: [&'static str; 2],
    pub unsub_button: &'static str,
    pub unsub_done: &'static str,
    pub unsub_already: &'static str,
    pub prefs_link: &'static str,
    pub prefs_title: &'static str,
    pub prefs_language: &'static str,
    pub prefs_topics: &'static str,
    pub prefs_save: &'static str,
    pub prefs_saved: &'static str,
    pub prefs_export: &'static str,
    pub prefs_export_intro: &'static str,
    pub prefs_erase_title: &'static str,
    pub prefs_erase_intro: &'static str,
    pub prefs_erase_button: &'static str,
    pub erased_done: &'static str,
    pub prefs_timezone: &'static str,
    pub prefs_timezone_hint: &'static str,
    pub prefs_timezone_invalid: &'static str,
    pub data_link_sent: &'static str,
    pub data_link_expired: &'static str,
    /// Text before and after the address.
    pub erase_question: [&'static str; 2],
    pub prefs_language_auto: &'static str,
    pub prefs_name_invalid: &'static str,
    pub prefs_language_invalid: &'static str,
    pub err_email_empty: &'static str,
    pub err_email_shape: &'static str,
    pub err_email_too_long: &'static str,
    pub err_email_domain: &'static str,
    pub err_email_local: &'static str,
    pub err_name_too_long: &'static str,
    pub err_name_not_allowed: &'static str,
    /// The label of the honeypot field: hidden, but screen readers may reach it.
    pub honeypot_label: &'static str,
}

pub static PUBLIC_EN: PublicStrings = PublicStrings {
    lang: Lang::En,
    email: "Email",
    name: "Name",
    name_optional: "Name (optional)",
    signup_submit: "Subscribe",
    signup_thanks: "Thank you for subscribing.",
    signup_check_inbox: "Almost done: we sent you an email. Open the link in it to confirm your subscription.",
    signup_rate_limited: "Too many signups from your network just now. Please try again later.",
    confirm_title: "Confirm your subscription",
    confirm_intro: "One click and you are on the list.",
    confirm_button: "Yes, subscribe me",
    confirm_done: "You are subscribed. Thank you!",
    confirm_expired: "This confirmation link has expired. Sign up again and we will send you a new one.",
    link_invalid: "This link is not valid. It may have been copied incompletely.",
    unsub_title: "Unsubscribe",
    unsub_question: ["Stop sending mail to", "?"],
    unsub_button: "Unsubscribe",
    unsub_done: "You are unsubscribed and will not receive any more mail from us.",
    unsub_already: "This address is already unsubscribed.",
    prefs_link: "Change your preferences instead",
    prefs_title: "Your preferences",
    prefs_language: "Language",
    prefs_topics: "Topics you want to hear about",
    prefs_save: "Save preferences",
    prefs_saved: "Your preferences are saved.",
    prefs_export: "Download my data",
    prefs_export_intro: "Everything we hold about you, as a JSON file. We mail you the download link.",
    prefs_erase_title: "Delete my data",
    prefs_erase_intro: "Removes your address, name and details for good. You will not receive any more mail. We mail you a link to confirm.",
    prefs_erase_button: "Delete everything about me",
    erased_done: "Your data has been deleted.",
    prefs_timezone: "Time zone",
    prefs_timezone_hint: "For mail timed to your day, e.g. Asia/Seoul. Leave empty to let us guess.",
    prefs_timezone_invalid: "Choose a time zone from the list, like Asia/Seoul or Europe/Berlin.",
    data_link_sent: "We sent a link to your address. It works for one hour; if you did not ask, nothing happens.",
    data_link_expired: "This link has expired. Ask for a new one on your preferences page.",
    erase_question: ["Delete everything held about", "?"],
    prefs_language_auto: "Automatic (your browser's)",
    prefs_name_invalid: "the name is too long or contains characters that are not allowed",
    prefs_language_invalid: "choose a language from the list",
    err_email_empty: "enter an email address",
    err_email_shape: "an email address needs one @ with something on both sides",
    err_email_too_long: "that email address is too long",
    err_email_domain: "the part after @ is not a valid domain",
    err_email_local: "the part before @ contains characters that are not allowed",
    err_name_too_long: "the name is too long",
    err_name_not_allowed: "the name contains characters that are not allowed",
    honeypot_label: "Leave this field empty",
};

pub static PUBLIC_KO: PublicStrings = PublicStrings {
    lang: Lang::Ko,
    email: "이메일",
    name: "이름",
    name_optional: "이름 (선택)",
    signup_submit: "구독하기",
    signup_thanks: "구독해 주셔서 감사합니다.",
    signup_check_inbox: "거의 다 되었습니다. 방금 보내 드린 메일의 링크를 눌러 구독을 확인해 주세요.",
    signup_rate_limited: "지금 사용 중인 네트워크에서 구독 신청이 너무 많이 들어왔습니다. 잠시 후 다시 시도해 주세요.",
    confirm_title: "구독 확인",
    confirm_intro: "한 번만 누르시면 구독이 완료됩니다.",
    confirm_button: "네, 구독하겠습니다",
    confirm_done: "구독이 완료되었습니다. 감사합니다!",
    confirm_expired: "확인 링크의 유효 기간이 지났습니다. 다시 구독을 신청해 주시면 새 링크를 보내 드리겠습니다.",
    link_invalid: "올바르지 않은 링크입니다. 링크 주소가 일부만 복사되었을 수 있습니다.",
    unsub_title: "구독 취소",
    unsub_question: ["", " 주소로 더 이상 메일을 받지 않으시겠습니까?"],
    unsub_button: "구독 취소하기",
    unsub_done: "구독이 취소되었습니다. 앞으로 메일을 보내 드리지 않겠습니다.",
    unsub_already: "이미 구독이 취소된 주소입니다.",
    prefs_link: "구독을 취소하는 대신 수신 설정 바꾸기",
    prefs_title: "수신 설정",
    prefs_language: "언어",
    prefs_topics: "받아 보고 싶은 주제",
    prefs_save: "설정 저장",
    prefs_saved: "수신 설정이 저장되었습니다.",
    prefs_export: "내 정보 내려받기",
    prefs_export_intro: "보관 중인 내 정보 전체를 JSON 파일로 받으실 수 있습니다. 내려받기 링크는 메일로 보내 드립니다.",
    prefs_erase_title: "내 정보 삭제",
    prefs_erase_intro: "이메일 주소, 이름 등 내 정보를 완전히 삭제합니다. 삭제 후에는 메일을 더 이상 받지 않습니다. 확인 링크를 메일로 보내 드립니다.",
    prefs_erase_button: "내 정보 모두 삭제하기",
    erased_done: "정보가 삭제되었습니다.",
    prefs_timezone: "시간대",
    prefs_timezone_hint: "하루 중 알맞은 때에 메일을 보내 드리는 데 사용합니다(예: Asia/Seoul). 비워 두시면 자동으로 추정합니다.",
    prefs_timezone_invalid: "목록에서 시간대를 골라 주세요(예: Asia/Seoul, Europe/Berlin).",
    data_link_sent: "메일로 링크를 보내 드렸습니다. 링크는 1시간 동안 유효합니다. 직접 요청하지 않으셨다면 아무 일도 일어나지 않습니다.",
    data_link_expired: "링크의 유효 기간이 지났습니다. 수신 설정 페이지에서 새 링크를 요청해 주세요.",
    erase_question: ["", " 주소에 관해 보관된 정보를 모두 삭제하시겠습니까?"],
    prefs_language_auto: "자동 (브라우저 설정)",
    prefs_name_invalid: "이름이 너무 길거나 사용할 수 없는 문자가 들어 있습니다.",
    prefs_language_invalid: "목록에서 언어를 골라 주세요.",
    err_email_empty: "이메일 주소를 입력해 주세요.",
    err_email_shape: "이메일 주소에는 @가 하나 있어야 하고, 그 앞뒤에 내용이 있어야 합니다.",
    err_email_too_long: "이메일 주소가 너무 깁니다.",
    err_email_domain: "@ 뒤의 도메인이 올바르지 않습니다.",
    err_email_local: "@ 앞부분에 사용할 수 없는 문자가 들어 있습니다.",
    err_name_too_long: "이름이 너무 깁니다.",
    err_name_not_allowed: "이름에 사용할 수 없는 문자가 들어 있습니다.",
    honeypot_label: "이 칸은 비워 두세요",
};

/// The subscriber-facing strings in a language.
pub fn public_strings_for(lang: Lang) -> &'static PublicStrings {
    match lang {
        Lang::En => &PUBLIC_EN,
        Lang::Ko => &PUBLIC_KO,
    }
}

impl PublicStrings {
    /// Why a signup was refused, in this language.
    pub fn signup_error(&self, e: &crate::audience::signup::SignupError) -> &'static str {
        use crate::audience::signup::SignupError as E;
        match e {
            E::Address(a) => self.address_error(a),
            E::NameTooLong => self.err_name_too_long,
            E::NameNotAllowed => self.err_name_not_allowed,
        }
    }

    /// Why an address was refused, in this language.
    pub fn address_error(&self, e: &crate::address::AddressError) -> &'static str {
        use crate::address::AddressError as E;
        match e {
            E::Empty => self.err_email_empty,
            E::Shape => self.err_email_shape,
            E::TooLong => self.err_email_too_long,
            E::Domain => self.err_email_domain,
            E::Local => self.err_email_local,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_is_read_by_q_value_then_order() {
        let l = Lang::from_accept_language;
        assert_eq!(l("ko-KR,ko;q=0.9,en;q=0.8"), Some(Lang::Ko));
        assert_eq!(l("ko"), Some(Lang::Ko));
        assert_eq!(l("en-US"), Some(Lang::En));
        assert_eq!(l("en-US,en;q=0.9"), Some(Lang::En));
        // The q-value decides, not the position.
        assert_eq!(l("en;q=0.5, ko;q=0.8"), Some(Lang::Ko));
        assert_eq!(l("de-DE, en;q=0.3, ko;q=0.7"), Some(Lang::Ko));
        // Equal weights: the header's order.
        assert_eq!(l("en, ko"), Some(Lang::En));
        assert_eq!(l("ko;q=0.5, en;q=0.500"), Some(Lang::Ko));
        // q=0 means "not this one"; `*` and unknown languages pick nothing.
        assert_eq!(l("ko;q=0, en;q=0.1"), Some(Lang::En));
        assert_eq!(l("ko;q=0"), None);
        assert_eq!(l("*"), None);
        assert_eq!(l("de, fr;q=0.9"), None);
        assert_eq!(l(""), None);
        // Malformed q-values skip the entry rather than guess.
        assert_eq!(l("ko;q=2, en;q=0.2"), Some(Lang::En));
        assert_eq!(l("ko;q=abc"), None);
        assert_eq!(l("ko;q=0.1234"), None);
        assert_eq!(l(" KO-kr ; Q=1.0 "), Some(Lang::Ko));
        // Korean is never matched by accident.
        assert_eq!(l("kok, kos"), None);
    }

    #[test]
    fn tags_are_read_by_their_primary_subtag() {
        assert_eq!(Lang::from_tag("ko"), Some(Lang::Ko));
        assert_eq!(Lang::from_tag("ko-KR"), Some(Lang::Ko));
        assert_eq!(Lang::from_tag("ko_kr"), Some(Lang::Ko));
        assert_eq!(Lang::from_tag("EN-gb"), Some(Lang::En));
        assert_eq!(Lang::from_tag("ja"), None);
        assert_eq!(Lang::from_tag(""), None);
        assert_eq!(Lang::pick([None, Some(Lang::Ko), Some(Lang::En)]), Lang::Ko);
        assert_eq!(Lang::pick([None, None]), Lang::En);
    }

    #[test]
    fn every_table_says_which_language_it_is() {
        for l in Lang::ALL {
            assert_eq!(strings_for(l).lang, l);
            assert_eq!(public_strings_for(l).lang, l);
        }
    }

    /// Every string of a public table. The destructuring names every field (no `..`),
    /// so a string added to the struct but not to this check does not compile.
    fn public_all(p: &PublicStrings) -> Vec<&'static str> {
        let PublicStrings {
            lang: _,
            email,
            name,
            name_optional,
            signup_submit,
            signup_thanks,
            signup_check_inbox,
            signup_rate_limited,
            confirm_title,
            confirm_intro,
            confirm_button,
            confirm_done,
            confirm_expired,
            link_invalid,
            unsub_title,
            unsub_question,
            unsub_button,
            unsub_done,
            unsub_already,
            prefs_link,
            prefs_title,
            prefs_language,
            prefs_topics,
            prefs_save,
            prefs_saved,
            prefs_export,
            prefs_export_intro,
            prefs_erase_title,
            prefs_erase_intro,
            prefs_erase_button,
            erased_done,
            prefs_timezone,
            prefs_timezone_hint,
            prefs_timezone_invalid,
            data_link_sent,
            data_link_expired,
            erase_question,
            prefs_language_auto,
            prefs_name_invalid,
            prefs_language_invalid,
            err_email_empty,
            err_email_shape,
            err_email_too_long,
            err_email_domain,
            err_email_local,
            err_name_too_long,
            err_name_not_allowed,
            honeypot_label,
        } = *p;
        vec![
            email,
            name,
            name_optional,
            signup_submit,
            signup_thanks,
            signup_check_inbox,
            signup_rate_limited,
            confirm_title,
            confirm_intro,
            confirm_button,
            confirm_done,
            confirm_expired,
            link_invalid,
            unsub_title,
            unsub_question[1],
            unsub_button,
            unsub_done,
            unsub_already,
            prefs_link,
            prefs_title,
            prefs_language,
            prefs_topics,
            prefs_save,
            prefs_saved,
            prefs_export,
            prefs_export_intro,
            prefs_erase_title,
            prefs_erase_intro,
            prefs_erase_button,
            erased_done,
            prefs_timezone,
            prefs_timezone_hint,
            prefs_timezone_invalid,
            data_link_sent,
            data_link_expired,
            erase_question[1],
            prefs_language_auto,
            prefs_name_invalid,
            prefs_language_invalid,
            err_email_empty,
            err_email_shape,
            err_email_too_long,
            err_email_domain,
            err_email_local,
            err_name_too_long,
            err_name_not_allowed,
            honeypot_label,
        ]
    }

    fn is_hangul(c: char) -> bool {
        ('\u{AC00}'..='\u{D7A3}').contains(&c)
    }

    #[test]
    fn korean_public_strings_are_all_korean_and_none_is_left_in_english() {
        let (en, ko) = (public_all(&PUBLIC_EN), public_all(&PUBLIC_KO));
        assert_eq!(en.len(), ko.len());
        for (e, k) in en.iter().zip(&ko) {
            assert!(!k.trim().is_empty(), "empty Korean string for {e:?}");
            assert_ne!(e, k, "{e:?} is not translated");
            assert!(k.chars().any(is_hangul), "{k:?} has no Korean in it");
        }
        // A few known pairs, so a shuffled table cannot pass.
        assert_eq!(PUBLIC_EN.unsub_title, "Unsubscribe");
        assert_eq!(PUBLIC_KO.unsub_title, "구독 취소");
        assert_eq!(PUBLIC_KO.signup_thanks, "구독해 주셔서 감사합니다.");
        assert_eq!(PUBLIC_KO.signup_submit, "구독하기");
        assert_eq!(PUBLIC_KO.prefs_title, "수신 설정");
        // The address goes between the two halves of a question.
        assert_eq!(PUBLIC_EN.unsub_question, ["Stop sending mail to", "?"]);
        assert!(PUBLIC_KO.unsub_question[0].is_empty());
    }

    #[test]
    fn korean_dashboard_strings_are_translated() {
        let pairs = |t: &Strings| {
            vec![
                t.nav_dashboard,
                t.nav_audience,
                t.nav_settings,
                t.nav_outbox,
                t.sign_out,
                t.login_title,
                t.account_title,
                t.account_language,
                t.aud_title,
                t.aud_status,
                t.aud_stage,
                t.error_title,
                t.notice_language_saved,
                t.jobs_title,
                t.seg_title,
                t.imp_title,
                t.out_title,
                t.role_owner,
                t.states.active,
                t.states.at_risk,
                t.states.unsubscribed,
                t.states.queued,
            ]
        };
        for (e, k) in pairs(&EN).into_iter().zip(pairs(&KO)) {
            assert!(!k.trim().is_empty());
            assert_ne!(e, k, "{e:?} is not translated");
            assert!(k.chars().any(is_hangul), "{k:?} has no Korean in it");
        }
        for (e, k) in EN.loop_steps.iter().zip(KO.loop_steps) {
            assert_ne!(*e, k);
        }
        assert_eq!((EN.nav_audience, KO.nav_audience), ("Audience", "구독자"));
        assert_eq!((EN.nav_settings, KO.nav_settings), ("Settings", "설정"));
        assert_eq!(KO.state("at-risk"), "이탈 위험");
        assert_eq!(EN.state("at-risk"), "at-risk");
        assert_eq!(KO.state("no-such-state"), "no-such-state");
        assert_eq!(KO.notice("language-saved"), Some("언어를 저장했습니다."));
    }

    #[test]
    fn problems_are_worded_in_korean_with_their_numbers_and_names_in_place() {
        use crate::{
            Problem as P, accounts::PasswordError, audience::segments::SegmentError as S,
            error::SegmentRowProblem as R,
        };
        let all = [
            P::FormUnreadable,
            P::UploadTooLarge { max_mib: 2048 },
            P::ChooseRole,
            P::ChooseLanguage,
            P::LastOwner,
            P::WrongCurrentPassword,
            P::SignInThrottled { minutes: 15 },
            P::Password(PasswordError::TooShort),
            P::Password(PasswordError::Mismatch),
            P::JobNotFailed,
            P::BulkNeedsTag,
            P::LifecycleRange,
            P::FieldKey,
            P::FormSlugTaken,
            P::Segment(S::NoField { key: "city".into() }),
            P::Segment(S::OpDoesNotApply {
                op: "contains".into(),
                field_type: "number".into(),
            }),
            P::SegmentRow {
                row: 3,
                problem: R::Days,
            },
            P::SegmentJson { line: 1, column: 2 },
            P::ImportEmailTwice {
                first: 1,
                second: 4,
            },
            P::ImportTargetTwice {
                target: "first_name".into(),
                first: 2,
                second: 5,
            },
            P::TestSubject,
        ];
        for p in &all {
            let (en, ko) = (EN.problem(p), KO.problem(p));
            assert_eq!(en, p.to_string(), "Display is the English text");
            assert_ne!(en, ko);
            assert!(ko.chars().any(is_hangul), "{ko:?} has no Korean in it");
        }
        assert_eq!(
            KO.problem(&P::UploadTooLarge { max_mib: 2048 }),
            "파일이 2,048MiB보다 큽니다."
        );
        assert_eq!(
            KO.problem(&P::SignInThrottled { minutes: 15 }),
            "로그인에 실패한 횟수가 너무 많습니다. 15분 뒤에 다시 시도해 주세요."
        );
        assert!(
            KO.problem(&P::Password(PasswordError::TooShort))
                .contains("10자")
        );
        // Comparison and field type are named in Korean inside the sentence.
        let op = KO.problem(&P::Segment(S::OpDoesNotApply {
            op: "contains".into(),
            field_type: "number".into(),
        }));
        assert!(op.contains("포함함") && op.contains("숫자"), "{op}");
        assert!(
            KO.problem(&all[19])
                .starts_with("2번 열과 5번 열이 모두 ‘이름’")
        );
        assert_eq!(
            EN.problem(&P::SegmentRow {
                row: 3,
                problem: R::Days
            }),
            "row 3: not a number of days"
        );
    }

    #[test]
    fn counts_and_labels_read_naturally() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
        assert_eq!(group_digits(-1234567), "-1,234,567");
        assert_eq!((KO.imp_size)(2048), "2,048바이트");
        assert_eq!((EN.imp_size)(2048), "2,048 bytes");
        assert_eq!(KO.aud_total_around, ["전체 구독자 ", "명"]);
        assert_eq!(KO.import_target("field:도시"), "필드: 도시");
        assert_eq!(KO.import_target("email"), "이메일");
        assert_eq!(KO.event("clicked"), "클릭");
        assert_eq!(KO.event("some_new_kind"), "some_new_kind");
        assert_eq!(KO.purpose("confirmation"), "구독 확인");
        assert_eq!(KO.seg_kind_options()[1], ("status", "상태가 다음과 같음"));
        assert_eq!(EN.seg_op_options()[3], ("greater_than", "greater than"));
        use crate::audience::fields::FieldType;
        assert_eq!(KO.field_type(FieldType::Boolean), "예/아니요");
        // The page names report codes in Korean; English keeps the row's own detail.
        for c in ReportCode::ALL {
            let ko = KO.report_reason(c.as_str(), "column 2 (age): not a number");
            assert!(ko.chars().any(is_hangul), "{c:?}");
        }
        assert_eq!(
            EN.report_reason("value", "column 2 (age): not a number"),
            "column 2 (age): not a number"
        );
        assert_eq!(KO.report_reason("", "old line"), "old line");
        assert!(
            KO.message(&crate::error::Message::NotFound)
                .chars()
                .any(is_hangul)
        );
        assert_eq!((KO.status_name)(404), "찾을 수 없음");
        assert_eq!((EN.status_name)(404), "Not Found");
    }

    #[test]
    fn address_errors_have_their_own_words_in_each_language() {
        use crate::address::EmailAddress;
        let e = EmailAddress::parse("nope").unwrap_err();
        assert_eq!(PUBLIC_EN.address_error(&e), e.to_string());
        assert!(PUBLIC_KO.address_error(&e).contains('@'));
        assert_ne!(PUBLIC_KO.address_error(&e), PUBLIC_EN.address_error(&e));
    }
}
