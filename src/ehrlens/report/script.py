"""The report's inline JavaScript: method toggles, the per-patient colour scale toggle,
sorting and filtering of patients.

Plain JavaScript, no library and no network. It reads only ``data-*`` attributes of the page
(``data-method`` on everything that belongs to a method, ``data-pid`` / ``data-risk`` /
``data-label`` on patient sections and index links), so the HTML stays complete and readable
without it.
"""

from __future__ import annotations

SCRIPT = r"""
(function () {
  var root = document.querySelector('.ehrlens-report');
  if (!root) { return; }
  var list = root.querySelector('#patients');
  var index = root.querySelector('#index-links');
  var sections = Array.prototype.slice.call(list.querySelectorAll('section.patient'));
  var links = {};
  Array.prototype.forEach.call(index.querySelectorAll('a[data-pid]'), function (a) {
    links[a.getAttribute('data-pid')] = a;
  });
  var each = function (nodes, f) { Array.prototype.forEach.call(nodes, f); };

  each(root.querySelectorAll('input[data-toggle-method]'), function (box) {
    box.addEventListener('change', function () {
      var method = box.getAttribute('data-toggle-method');
      each(root.querySelectorAll('[data-method]'), function (el) {
        if (el.getAttribute('data-method') === method) {
          el.classList.toggle('hidden', !box.checked);
        }
      });
    });
  });

  // colour scale: shared per method (the legend), or each patient's own largest score
  var perPatient = root.querySelector('#scale-per-patient');
  if (perPatient) {
    perPatient.addEventListener('change', function () {
      each(root.querySelectorAll('[data-own-style]'), function (el) {
        if (!el.hasAttribute('data-shared-style')) {
          el.setAttribute('data-shared-style', el.getAttribute('style') || '');
        }
        el.setAttribute('style', el.getAttribute(
          perPatient.checked ? 'data-own-style' : 'data-shared-style'));
      });
    });
  }

  var search = root.querySelector('#filter-text');
  var labelFilter = root.querySelector('#filter-label');
  var minRisk = root.querySelector('#filter-risk');
  var sortBy = root.querySelector('#sort-by');
  var counter = root.querySelector('#shown-count');
  var risk = function (s) {
    var r = parseFloat(s.getAttribute('data-risk'));
    return isNaN(r) ? -Infinity : r;
  };
  var orders = {
    'risk-desc': function (a, b) { return risk(b) - risk(a); },
    'risk-asc': function (a, b) { return risk(a) - risk(b); },
    'id': function (a, b) {
      return a.getAttribute('data-pid').localeCompare(b.getAttribute('data-pid'));
    },
    'report': function (a, b) { return sections.indexOf(a) - sections.indexOf(b); }
  };

  function apply() {
    var text = search.value.trim().toLowerCase();
    var label = labelFilter.value;
    var low = parseFloat(minRisk.value);
    var shown = 0;
    var ordered = sections.slice().sort(orders[sortBy.value] || orders.report);
    ordered.forEach(function (s) {
      var pid = s.getAttribute('data-pid');
      var ok = (!text || s.textContent.toLowerCase().indexOf(text) >= 0) &&
        (label === '' || s.getAttribute('data-label') === label) &&
        (isNaN(low) || risk(s) >= low);
      s.classList.toggle('hidden', !ok);
      list.appendChild(s);
      if (links[pid]) {
        links[pid].classList.toggle('hidden', !ok);
        index.appendChild(links[pid]);
      }
      if (ok) { shown += 1; }
    });
    counter.textContent = String(shown);
  }
  [search, labelFilter, minRisk, sortBy].forEach(function (el) {
    el.addEventListener('input', apply);
    el.addEventListener('change', apply);
  });
  apply();
})();
"""
