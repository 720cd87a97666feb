// Sign-in and sign-up forms: the server's rules checked as you type, its answers in the same place.

import { $, setFieldError, setupTabs, toast, withBusy } from '../dom.js';
import { checkEmail, checkPassword, checkRequired, checkUsername } from '../validation.js';
import { suspendedSignInText } from './admin.js';

/** Wire the forms; `onSignedIn(reply)` gets the {user, token} answer. */
export function setupAuth(api, onSignedIn) {
  const selectTab = setupTabs(document.querySelector('#auth-view .segmented'), (id) => {
    const form = id === 'tab-signup' ? $('signup-form') : $('signin-form');
    form.querySelector('input')?.focus();
  });

  const signin = {
    form: $('signin-form'),
    fields: {
      login: [$('signin-login'), (v) => checkRequired(v, 'Username or email')],
      password: [$('signin-password'), (v) => (v ? '' : 'Password is required.')],
    },
    submit: (values) => api.post('/api/auth/login', values),
  };
  const signup = {
    form: $('signup-form'),
    fields: {
      username: [$('signup-username'), checkUsername],
      email: [$('signup-email'), checkEmail],
      password: [$('signup-password'), checkPassword],
    },
    submit: (values) => api.post('/api/auth/register', { ...values, email: values.email.trim() }),
  };

  for (const spec of [signin, signup]) {
    const formError = $(`${spec.form.id.replace('-form', '')}-form-error`);
    for (const [input, check] of Object.values(spec.fields)) {
      // Judge a field once it has been left (not while typing its first letters), then live.
      input.addEventListener('blur', () => {
        if (input.value) setFieldError(input, check(input.value));
        input.dataset.touched = 'true';
      });
      input.addEventListener('input', () => {
        if (input.dataset.touched) setFieldError(input, check(input.value));
        formError.textContent = '';
      });
    }
    spec.form.addEventListener('submit', async (event) => {
      event.preventDefault();
      formError.textContent = '';
      const values = {};
      let firstBad = null;
      for (const [name, [input, check]] of Object.entries(spec.fields)) {
        input.dataset.touched = 'true';
        const message = check(input.value);
        setFieldError(input, message);
        if (message && !firstBad) firstBad = input;
        values[name] = name === 'login' ? input.value.trim() : input.value;
      }
      if (firstBad) {
        firstBad.focus();
        return;
      }
      const button = spec.form.querySelector('button[type="submit"]');
      try {
        const reply = await withBusy(button, () => spec.submit(values));
        for (const [input] of Object.values(spec.fields)) {
          input.value = '';
          delete input.dataset.touched;
        }
        onSignedIn(reply);
      } catch (err) {
        const target = err.field && spec.fields[err.field]?.[0];
        if (target) {
          setFieldError(target, err.message);
          target.focus();
        } else if (err.code === 'suspended') {
          formError.textContent = suspendedSignInText(err.details);
        } else if (err.status === 0 || err.status >= 500) {
          formError.textContent = err.message;
          toast(err.message, 'error');
        } else {
          formError.textContent = err.message;
        }
      }
    });
  }

  return {
    show(tab = 'tab-signin') {
      $('auth-view').hidden = false;
      selectTab(tab);
    },
    hide() {
      $('auth-view').hidden = true;
    },
  };
}
