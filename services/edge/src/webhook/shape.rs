//! The shape of a webhook body, bounded before anything reads it as JSON: how
//! deep it nests and how many elements it holds. One pass over the bytes with
//! a counter and no stack, so a body of 100,000 nested arrays costs what any
//! 200 KB body costs and is refused with a 400 naming the bound. What passes
//! here is within what ingest's parser accepts (serde_json stops at 128
//! levels), so a verified body is never answered 200 and then found unparseable.

use crate::error::ApiError;

/// Refuses a body nesting deeper than `max_depth`, or holding more than
/// `max_elements` array elements and object members in all. Malformed JSON is
/// left to the parse that follows.
pub(crate) fn check(body: &[u8], max_depth: usize, max_elements: usize) -> Result<(), ApiError> {
    let mut depth = 0usize;
    let mut elements = 0usize;
    // Just after `[` or `{`: the next value, if any, is the container's first.
    let mut opened = false;
    let mut bytes = body.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => continue,
            b'[' | b'{' => {
                if opened {
                    elements += 1;
                }
                depth += 1;
                if depth > max_depth {
                    return Err(ApiError::bad_request(
                        "json_too_deep",
                        format!("the body nests arrays and objects deeper than {max_depth} levels"),
                    ));
                }
                opened = true;
                continue;
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' => elements += 1,
            b'"' => {
                if opened {
                    elements += 1;
                }
                // Skip the string: escapes hide quotes, nothing else matters.
                while let Some(&c) = bytes.next() {
                    match c {
                        b'\\' => {
                            bytes.next();
                        }
                        b'"' => break,
                        _ => {}
                    }
                }
            }
            _ if opened => elements += 1,
            _ => {}
        }
        opened = false;
        if elements > max_elements {
            return Err(ApiError::bad_request(
                "too_many_elements",
                format!(
                    "the body holds more than {max_elements} array elements and object members"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Elements as the scan counts them, or the code it refused with.
    fn count(body: &str) -> usize {
        (0..1000)
            .find(|&n| check(body.as_bytes(), 128, n).is_ok())
            .expect("fewer than 1000 elements")
    }

    #[test]
    fn elements_are_array_elements_and_object_members() {
        assert_eq!(count("{}"), 0);
        assert_eq!(count("[]"), 0);
        assert_eq!(count("[ ]"), 0);
        assert_eq!(count("[1]"), 1);
        assert_eq!(count(r#"{"a":1,"b":[true,null,"x,]"]}"#), 5);
        assert_eq!(count(r#"[[],[[]],{"k\"[":{}}]"#), 5);
        assert_eq!(count(r#"{"a":"\\","b":"\"{"}"#), 2);
    }

    #[test]
    fn depth_is_bounded_and_named() {
        assert!(check(b"[[[1]]]", 3, 10).is_ok());
        let e = check(b"[[[[1]]]]", 3, 10).expect_err("too deep");
        assert_eq!((e.status.as_u16(), e.code), (400, "json_too_deep"));
        // Brackets in strings are not nesting.
        assert!(check(br#"{"a":"[[[[[[["}"#, 2, 10).is_ok());
        let e = check(b"[1,2,3]", 3, 2).expect_err("too many");
        assert_eq!(e.code, "too_many_elements");
    }

    #[test]
    fn a_hundred_thousand_nested_arrays_are_refused_without_recursion() {
        let n = 100_000;
        let body = format!(r#"{{"entry":{}{}}}"#, "[".repeat(n), "]".repeat(n));
        let e = check(body.as_bytes(), 64, 100_000).expect_err("refused");
        assert_eq!(e.code, "json_too_deep");
        // Unbounded here, the scan still walks it all with no stack.
        assert!(check(body.as_bytes(), usize::MAX, usize::MAX).is_ok());
    }
}
