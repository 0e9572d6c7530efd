// Claim page helpers: a live word count and the cooldown counting down. The form works without.
(function () {
  "use strict";
  var form = document.getElementById("claim-form");
  if (!form) return;
  var strings = JSON.parse(document.getElementById("claim-strings").textContent);
  var phrase = form.querySelector("textarea");
  var count = document.getElementById("word-count");
  var submit = document.getElementById("claim-submit");
  var cooldown = document.getElementById("cooldown");

  function words() {
    return phrase.value.split(/[\s,;]+/).filter(function (w) { return w.length > 0; }).length;
  }
  function showCount() {
    count.textContent = strings.count
      .replace("%(count)s", words())
      .replace("%(total)s", count.dataset.total);
  }
  phrase.addEventListener("input", showCount);
  showCount();

  if (cooldown) {
    var left = parseInt(cooldown.dataset.seconds, 10);
    var timer = setInterval(function () {
      left -= 1;
      if (left <= 0) {
        clearInterval(timer);
        cooldown.textContent = strings.ready;
        submit.disabled = false;
      }
    }, 1000);
  }
})();
