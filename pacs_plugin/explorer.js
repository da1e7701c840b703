/* Radiogate in Orthanc Explorer (ExtendOrthancExplorer): the triage lane badge and certainty on
 * study pages, a link to the findings, and a worklist page. Stable hooks for browser tests
 * (docs/pacs.md): #radiogate-study-panel, .radiogate-lane-badge[data-lane],
 * .radiogate-certainty, #radiogate-findings-link, #radiogate-worklist-button,
 * #radiogate-worklist (page), #radiogate-worklist-table, tr.radiogate-worklist-row[data-lane]. */
(function () {
  'use strict';
  var API = '../radiogate/';
  var COLOURS = { critical: '#b00020', urgent: '#e07000', routine: '#4a7a4a' };

  function text(value) {
    return $('<span/>').text(value === null || value === undefined ? '-' : String(value)).html();
  }

  function badge(lane) {
    return '<span class="radiogate-lane-badge radiogate-lane-' + text(lane) + '" data-lane="' +
      text(lane) + '" style="display:inline-block;padding:2px 8px;border-radius:4px;color:#fff;' +
      'font-weight:bold;background:' + (COLOURS[lane] || '#666') + '">' +
      text(String(lane).toUpperCase()) + '</span>';
  }

  function certainty(value) {
    var shown = value === null || value === undefined ? 'not scored' : Number(value).toFixed(2);
    return '<span class="radiogate-certainty" data-certainty="' + text(value) + '">certainty ' +
      text(shown) + '</span>';
  }

  function studyPanel(study, id) {
    var open = $.grep(study.alerts || [], function (a) { return a.state === 'open'; }).length;
    return '<div id="radiogate-study-panel" class="radiogate-study-panel" data-lane="' +
      text(study.lane) + '" style="margin:8px 0;padding:8px;border:1px solid #ccc">' +
      '<strong>Radiogate</strong> ' + badge(study.lane) + ' ' +
      certainty(maxCertainty(study.triage)) +
      ' <span class="radiogate-alerts" data-open="' + open + '">' + open + ' open alert(s)</span>' +
      ' <a id="radiogate-findings-link" data-ajax="false" target="_blank" href="' + API +
      'studies/' + encodeURIComponent(id) + '">Findings (JSON)</a></div>';
  }

  function maxCertainty(series) {
    var best = null;
    $.each(series || [], function (_i, s) {
      if (s.certainty !== null && s.certainty !== undefined && (best === null || s.certainty > best)) {
        best = s.certainty;
      }
    });
    return best;
  }

  $('#study').live('pagebeforeshow', function () {
    var id = $.mobile.pageData && $.mobile.pageData.uuid;
    $('#radiogate-study-panel').remove();
    if (!id) { return; }
    $.ajax({
      url: API + 'studies/' + id, dataType: 'json', cache: false,
      success: function (study) {
        $('#radiogate-study-panel').remove();
        $('#study .ui-content').first().prepend(studyPanel(study, id));
      },
      error: function (xhr) {
        $('#radiogate-study-panel').remove();
        var why = xhr.status === 404 ? 'not known to Radiogate' :
          xhr.status === 403 ? 'no Radiogate role' : 'Radiogate unavailable (' + xhr.status + ')';
        $('#study .ui-content').first().prepend('<div id="radiogate-study-panel" ' +
          'class="radiogate-study-panel" data-lane="" data-status="' + xhr.status + '">' +
          'Radiogate: ' + text(why) + '</div>');
      }
    });
  });

  var page = $('<div data-role="page" id="radiogate-worklist" data-url="radiogate-worklist">' +
    '<div data-role="header"><a href="#lookup" data-icon="home">Lookup</a>' +
    '<h1>Radiogate worklist</h1></div>' +
    '<div data-role="content"><p id="radiogate-worklist-status">loading ...</p>' +
    '<table id="radiogate-worklist-table" style="width:100%;border-collapse:collapse">' +
    '<thead><tr><th>lane</th><th>certainty</th><th>waiting</th><th>overdue</th>' +
    '<th>modalities</th><th>completeness</th><th>analysis</th><th>reasons</th><th>study</th>' +
    '</tr></thead><tbody></tbody></table></div></div>');
  $('body').append(page);

  function minutes(seconds) { return Math.round(seconds / 60) + ' min'; }

  function loadWorklist() {
    $('#radiogate-worklist-status').text('loading ...');
    $.ajax({
      url: API + 'worklist', dataType: 'json', cache: false,
      success: function (answer) {
        var body = $('#radiogate-worklist-table tbody').empty();
        $.each(answer.studies, function (_i, s) {
          var link = s.orthanc_id ? '<a class="radiogate-study-link" href="explorer.html#study?uuid=' +
            encodeURIComponent(s.orthanc_id) + '">open</a>' : 'not in the archive';
          body.append('<tr class="radiogate-worklist-row" data-lane="' + text(s.lane) +
            '" data-study-uid="' + text(s.study_uid) + '" data-orthanc-id="' + text(s.orthanc_id) +
            '"><td>' + badge(s.lane) + '</td><td>' + certainty(s.certainty) + '</td><td>' +
            text(minutes(s.waiting_seconds)) + '</td><td>' + (s.overdue ? 'yes' : '') + '</td><td>' +
            text(s.modalities.join(' ')) + '</td><td>' + text(s.completeness) + '</td><td>' +
            text(JSON.stringify(s.analysis)) + '</td><td>' + text(s.reasons.join(', ')) +
            '</td><td>' + link + '</td></tr>');
        });
        $('#radiogate-worklist-status').text(answer.count + ' studies');
      },
      error: function (xhr) {
        $('#radiogate-worklist-status').text('worklist unavailable (' + xhr.status + ')');
      }
    });
  }

  $('#radiogate-worklist').live('pagebeforeshow', loadWorklist);

  $('#lookup').live('pagebeforeshow', function () {
    if ($('#radiogate-worklist-button').length === 0) {
      $('#lookup .ui-content').first().prepend('<a id="radiogate-worklist-button" ' +
        'href="#radiogate-worklist" data-role="button">Radiogate worklist</a>');
      $('#radiogate-worklist-button').button();
    }
  });
}());
