// The server's input rules (chat/validation.py), checked before sending so the message shows at
// once next to the field. The server checks again; its answer is shown in the same place.

export const USERNAME_MIN = 3;
export const USERNAME_MAX = 32;
const USERNAME_RE = /^[A-Za-z0-9_.-]+$/;
const EMAIL_MAX = 254;
const EMAIL_RE = /^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$/;
export const PASSWORD_MIN_BYTES = 8;
export const PASSWORD_MAX_BYTES = 72;
export const BODY_MAX_CHARS = 4000;
export const GROUP_NAME_MAX = 64;
const FRIEND_CODE_RE = /^[A-Za-z0-9]{8}$/;

// Python counts code points; String.length counts UTF-16 units.
const codePoints = (text) => [...text].length;
const utf8Bytes = (text) => new TextEncoder().encode(text).length;

/** Each check returns an error message, or '' when the value is acceptable. */
export function checkUsername(value) {
  if (codePoints(value) < USERNAME_MIN) return `Username must be at least ${USERNAME_MIN} characters.`;
  if (codePoints(value) > USERNAME_MAX) return `Username must be at most ${USERNAME_MAX} characters.`;
  if (!USERNAME_RE.test(value)) return "Username may contain only letters, digits, '_', '.' and '-'.";
  return '';
}

export function checkEmail(value) {
  const v = value.trim();
  if (!v) return 'Email is required.';
  if (v.length > EMAIL_MAX || !EMAIL_RE.test(v)) return 'Email address is not valid.';
  return '';
}

export function checkPassword(value) {
  const size = utf8Bytes(value);
  if (size < PASSWORD_MIN_BYTES) return `Password must be at least ${PASSWORD_MIN_BYTES} bytes.`;
  if (size > PASSWORD_MAX_BYTES) return `Password must be at most ${PASSWORD_MAX_BYTES} bytes (bcrypt's limit).`;
  return '';
}

export function checkRequired(value, label) {
  return value.trim() ? '' : `${label} is required.`;
}

export function checkBody(value) {
  const v = value.trim();
  if (!v) return 'Message must not be empty.';
  if (codePoints(v) > BODY_MAX_CHARS) return `Message must be at most ${BODY_MAX_CHARS} characters.`;
  return '';
}

export function checkGroupName(value) {
  const v = value.trim();
  if (!v) return 'Group name must not be empty.';
  if (codePoints(v) > GROUP_NAME_MAX) return `Group name must be at most ${GROUP_NAME_MAX} characters.`;
  return '';
}

/** A friend code as people type it: any case, dash and spaces optional. */
export function normalizeFriendCode(value) {
  return value.replace(/[\s-]/g, '').toUpperCase();
}

export function checkFriendCode(value) {
  const code = normalizeFriendCode(value);
  if (!code) return 'Enter a friend code.';
  if (!FRIEND_CODE_RE.test(code)) return 'A friend code has 8 letters and digits, like ABCD-2345.';
  return '';
}
